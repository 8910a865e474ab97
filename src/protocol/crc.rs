//! CRC32C (Castagnoli) of record payloads, the checksum producers store and consumers verify.
//!
//! Values are exactly the `crc32c` crate's. Small payloads, the common case on the hot path,
//! skip the crate's dispatch and use the SSE4.2 `crc32` instruction directly (8 bytes per
//! instruction) when the CPU has it; larger ones go to the crate, whose interleaved hardware
//! path is faster per byte, and so does every CPU without SSE4.2.

/// Payloads up to this many bytes take the direct SSE4.2 path. The crate interleaves three
/// CRC streams for large buffers, which wins once a buffer is a few hundred bytes long.
#[cfg(target_arch = "x86_64")]
const DIRECT_MAX: usize = 256;

/// The CRC32C of `data`, equal to `crc32c::crc32c(data)`. Always inlined: it is a length test
/// and a call on every publish and poll.
#[inline(always)]
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if data.len() <= DIRECT_MAX && std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU supports SSE4.2, checked just above (std caches the CPUID answer, so
        // the check is one load and a bit test).
        return unsafe { direct(data) };
    }
    crc32c::crc32c(data)
}

/// CRC32C with the SSE4.2 `crc32` instruction, 8 bytes at a time, then the remaining bytes one
/// at a time. Same pre- and post-inversion as the crate.
///
/// # Safety
/// The CPU must support SSE4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
// The library builds with Rust 1.80, where these intrinsics are unsafe to call even in a
// function with the feature enabled; newer toolchains call them safely and see an unused block.
#[allow(unused_unsafe)]
unsafe fn direct(data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut crc = u64::from(u32::MAX);
    let mut words = data.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        // SAFETY: the caller guarantees SSE4.2, all the intrinsic needs; it reads no memory.
        crc = unsafe { _mm_crc32_u64(crc, u64::from_le_bytes(w)) };
    }
    let mut crc = crc as u32;
    for &b in words.remainder() {
        // SAFETY: as above.
        crc = unsafe { _mm_crc32_u8(crc, b) };
    }
    !crc
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// The documented CRC32C test vector.
    #[test]
    fn check_value() {
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(super::crc32c(b""), 0);
    }

    proptest! {
        /// Every length around the direct path's limit, at every alignment within a word,
        /// gives the crate's value.
        #[test]
        fn equals_the_crate(data in proptest::collection::vec(any::<u8>(), 0..600), skip in 0usize..8) {
            let data = &data[skip.min(data.len())..];
            prop_assert_eq!(super::crc32c(data), crc32c::crc32c(data));
        }
    }
}
