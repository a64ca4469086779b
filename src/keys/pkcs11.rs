//! PKCS#11 key backend (placeholder).
