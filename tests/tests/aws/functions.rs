//! Each Lambda handler with real event payloads.
