//! Cross-directory coordinator.
