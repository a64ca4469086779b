//! TPM 2.0 key backend (placeholder).
