//! The stable-toolchain smoke of the fuzz targets: every target over every file of its seed
//! corpus (`fuzz/corpus/<target>/`) and over deterministic mutations of each (truncations,
//! byte flips, special bytes, splices, seeded random edits). A missing or empty corpus fails,
//! and so does a target without its cargo-fuzz binary.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use steward_fuzz_targets::{TARGETS, release_fixture};

/// `fuzz/`, where the cargo-fuzz crate, its binaries and the corpus live.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/targets has a parent")
        .to_path_buf()
}

/// The seed files of `target`, sorted by name; panics when the directory is missing or empty.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the seed corpus of `{target}` is missing ({}: {e})",
            dir.display()
        )
    });
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("a readable seed"))
        })
        .collect();
    assert!(
        !out.is_empty(),
        "the seed corpus of `{target}` is empty ({})",
        dir.display()
    );
    out.sort();
    out
}

/// xorshift64: the same "random" edits on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Longer than any size limit of the parsers.
const OVERSIZED: usize = 300 * 1024;

/// Bytes that often matter to the parsers: JSON and TOML syntax, form and JWS separators,
/// NUL, a lone UTF-8 lead byte, the largest byte.
const SPECIAL: &[u8] = b"\"\\{}[]:,.=&%+\n\x00\xc3\xff-0";

/// Deterministic mutations of `seed`, `other` being another seed of the same target.
fn mutations(seed: &[u8], other: &[u8], salt: u64) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("empty".to_string(), Vec::new())];
    let n = seed.len();
    for k in 1..8 {
        out.push((format!("truncated to {k}/8"), seed[..n * k / 8].to_vec()));
    }
    if n > 0 {
        out.push(("last byte dropped".into(), seed[..n - 1].to_vec()));
        out.push(("first byte dropped".into(), seed[1..].to_vec()));
        for k in 0..16 {
            let at = k * n / 16;
            let mut m = seed.to_vec();
            m[at] ^= [0x01, 0x20, 0x80, 0xff][k % 4];
            out.push((format!("byte {at} flipped"), m));
        }
        for (k, b) in SPECIAL.iter().enumerate() {
            let at = (k * 7919) % n;
            let mut m = seed.to_vec();
            m[at] = *b;
            out.push((format!("byte {at} set to {b:#04x}"), m));
            let mut m = seed.to_vec();
            m.insert(at, *b);
            out.push((format!("{b:#04x} inserted at {at}"), m));
        }
    }
    let mut spliced = seed[..n / 2].to_vec();
    spliced.extend_from_slice(&other[other.len() / 2..]);
    out.push(("spliced with another seed".into(), spliced));
    let mut doubled = seed.to_vec();
    doubled.extend_from_slice(seed);
    out.push(("doubled".into(), doubled));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    for i in 0..16 {
        let mut m = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            match rng.below(4) {
                0 if !m.is_empty() => {
                    let at = rng.below(m.len());
                    m[at] = rng.next() as u8;
                }
                1 if !m.is_empty() => {
                    let at = rng.below(m.len());
                    let len = 1 + rng.below(8).min(m.len() - at - 1);
                    m.drain(at..at + len);
                }
                2 => {
                    let at = rng.below(m.len() + 1);
                    m.insert(at, SPECIAL[rng.below(SPECIAL.len())]);
                }
                _ if !m.is_empty() => {
                    let from = rng.below(m.len());
                    let len = 1 + rng.below(16).min(m.len() - from - 1);
                    let chunk = m[from..from + len].to_vec();
                    let at = rng.below(m.len() + 1);
                    m.splice(at..at, chunk);
                }
                _ => {}
            }
        }
        out.push((format!("random edit {i}"), m));
    }
    out
}

#[test]
fn every_target_runs_over_its_corpus_and_mutations_without_panicking() {
    let mut failures = Vec::new();
    let mut runs = 0usize;
    for (name, target) in TARGETS {
        let seeds = seeds(name);
        for (i, (file, seed)) in seeds.iter().enumerate() {
            let other = &seeds[(i + 1) % seeds.len()].1;
            let salt = name.bytes().chain(file.bytes()).map(u64::from).sum::<u64>();
            let mut inputs = vec![("as is".to_string(), seed.clone())];
            inputs.extend(mutations(seed, other, salt));
            if i == 0 {
                // Past every body size limit (the largest, a hook delivery or a JWKS, is
                // 256 KiB), which the fuzzer's length limit keeps it from trying.
                let mut big = seed.clone();
                while big.len() <= OVERSIZED {
                    big.extend_from_slice(seed);
                    big.push(b' ');
                }
                inputs.push(("repeated past the size limits".into(), big));
            }
            for (how, input) in inputs {
                runs += 1;
                if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
                    failures.push(format!(
                        "{name}: {file} ({how}): {} bytes, {:?}",
                        input.len(),
                        String::from_utf8_lossy(&input[..input.len().min(200)])
                    ));
                }
            }
        }
    }
    release_fixture();
    assert!(
        failures.is_empty(),
        "{} of {runs} runs panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every target has its cargo-fuzz binary (declared and calling it), and every corpus
/// directory and binary belongs to a target.
#[test]
fn the_cargo_fuzz_crate_matches_the_targets() {
    let dir = fuzz_dir();
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    for name in &names {
        assert!(
            manifest.contains(&format!(
                "name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\""
            )),
            "fuzz/Cargo.toml declares no [[bin]] `{name}` at fuzz_targets/{name}.rs"
        );
        let path = dir.join("fuzz_targets").join(format!("{name}.rs"));
        let source =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            source.contains(&format!("steward_fuzz_targets::{name}(")),
            "{} does not call steward_fuzz_targets::{name}",
            path.display()
        );
    }
    for sub in ["fuzz_targets", "corpus"] {
        for entry in std::fs::read_dir(dir.join(sub)).expect(sub) {
            let path = entry.expect("a directory entry").path();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                names.contains(&stem.as_str()),
                "{} belongs to no target in TARGETS",
                path.display()
            );
        }
    }
    assert_eq!(
        manifest.matches("[[bin]]").count(),
        names.len(),
        "fuzz/Cargo.toml declares binaries that are not targets"
    );
}
