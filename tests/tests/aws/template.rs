//! The SAM template.
