//! Placeholder: the emulator crate is built out in its own modules.
