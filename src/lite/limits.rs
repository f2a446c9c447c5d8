//! What a decoder accepts at most, checked before it buffers or allocates.

/// Bounds a decoder enforces before it allocates or buffers anything.
///
/// Every check is made on the length prefix alone, so an oversize value is
/// refused with [`DecodeError::TooLong`](super::DecodeError::TooLong) before its
/// bytes have arrived and without an allocation of the claimed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `L`-prefixed message body accepted (control messages, SETUP, GROUP
    /// header). The stream reader must buffer a whole body before decoding it, so this
    /// is also the most a peer can make a reader buffer. moq-net allows 64 MiB for
    /// control messages and 64 KiB for SETUP; a relay needs far less.
    pub max_message: usize,
    /// Longest broadcast path, announce prefix or suffix, and SETUP path, in bytes.
    pub max_path: usize,
    /// Longest track name, in bytes.
    pub max_name: usize,
    /// Largest FRAME payload size a header may announce. The codec never copies the
    /// payload; this only stops a peer from making the caller reserve a huge buffer.
    pub max_frame: u64,
}

impl Default for Limits {
    /// 64 KiB messages (moq-net's SETUP cap), 4 KiB paths and names, 64 MiB frames.
    fn default() -> Self {
        Self {
            max_message: 64 * 1024,
            max_path: 4096,
            max_name: 4096,
            max_frame: 64 * 1024 * 1024,
        }
    }
}

/// Largest number of `/`-separated non-empty segments in a broadcast path.
///
/// moq-net refuses deeper paths on both encode and decode (it matches the IETF
/// namespace tuple limit of 32 fields).
pub const MAX_PATH_SEGMENTS: usize = 32;
