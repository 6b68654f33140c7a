#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| steward_fuzz_targets::person_token(data));
