//! Placeholder: built out in its own modules.
