//! Finding the next byte a CSV field's conversion must look at, sixteen bytes at a time.
//!
//! Most field bytes are copied to the JSON output unchanged; only delimiters, quotes, JSON's
//! escapes (backslash and control characters) and non-ASCII bytes (whose UTF-8 is checked) need
//! attention. Testing sixteen bytes for them at once makes the common case one step per field,
//! and a long run one loop turn per sixty-four bytes, which matters most inside a Wasm sandbox,
//! where every turn also checks for interruption. Natively the test is SSE2 on x86-64. In Wasm,
//! a field's first sixteen bytes are tested as two 64-bit words with a few integer operations
//! ("SWAR") and the rest of a long run with `simd128` (each measured faster there than the
//! other); other targets use the words throughout.

use crate::out::Sink;

/// Which bytes end a run of plain field bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delimiters {
    /// Outside quotes: the comma and the quote too (line ends are control characters).
    Unquoted,
    /// Inside quotes: only the quote (commas and line ends are field bytes; line ends are
    /// control characters, so they still stop the run to be escaped).
    Quoted,
}

/// Sixteen-byte steps per turn of [`copy_plain`]'s loop.
const STEPS_PER_TURN: usize = 4;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

impl Delimiters {
    /// The byte that ends a run besides the ones every field stops at, in each byte of a word:
    /// the comma outside quotes; inside them the quote again (already one of those), so the
    /// word test has no branch or select on the kind of field.
    #[inline(always)]
    fn pattern(self) -> u64 {
        ONES * u64::from(self.byte())
    }

    /// That byte.
    #[inline(always)]
    fn byte(self) -> u8 {
        match self {
            Delimiters::Unquoted => b',',
            Delimiters::Quoted => b'"',
        }
    }
}

/// High bit set in each byte of `word` that equals the byte repeated in `pattern`; exact for the
/// lowest such byte.
#[inline(always)]
fn equal(word: u64, pattern: u64) -> u64 {
    let diff = word ^ pattern;
    diff.wrapping_sub(ONES) & !diff & HIGHS
}

/// High bit set in each byte of `word` that needs attention; exact for the lowest such byte.
#[inline(always)]
fn specials(word: u64, delimiters: Delimiters) -> u64 {
    // Bytes below 0x20 (control characters, including line ends), and bytes from 0x80.
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    control
        | (word & HIGHS)
        | equal(word, ONES * u64::from(b'"'))
        | equal(word, ONES * u64::from(b'\\'))
        | equal(word, delimiters.pattern())
}

/// Whether `byte` needs attention.
#[inline(always)]
fn is_special(byte: u8, delimiters: Delimiters) -> bool {
    !(0x20..0x80).contains(&byte)
        || byte == b'"'
        || byte == b'\\'
        || (byte == b',' && delimiters == Delimiters::Unquoted)
}

/// The position of the first byte at or after `from` that needs attention, or `input.len()`.
/// Only for the rare paths (the header, fields past its width, the end of a chunk): out of line,
/// so a caller's sink stays in registers (passing its address to a call would move it to
/// memory).
#[cold]
#[inline(never)]
pub(crate) fn next_special(input: &[u8], from: usize, delimiters: Delimiters) -> usize {
    let mut at = from;
    while let Some(window) = input.get(at..at + 8) {
        let word = u64::from_le_bytes(window.try_into().expect("eight bytes"));
        let found = specials(word, delimiters);
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while at < input.len() && !is_special(input[at], delimiters) {
        at += 1;
    }
    at
}

/// Copies the plain bytes from `from` up to the next byte that needs attention into `out`,
/// sixteen bytes at a time; returns that byte's position (or `input.len()`).
#[inline(always)]
pub(crate) fn copy_plain<S: Sink>(
    input: &[u8],
    from: usize,
    delimiters: Delimiters,
    out: &mut S,
) -> usize {
    // Most fields are shorter than sixteen bytes, so the first step stands outside the loop and
    // they never enter it (in a sandbox, every loop entry and turn checks for interruption).
    let mut at = from;
    match sixteen(input, at, delimiters, out, plain_prefix) {
        Step::Found(end) => return end,
        Step::Short => return copy_tail(input, at, delimiters, out),
        Step::Plain => at += 16,
    }
    // The rest of a long run, several steps per turn: in a sandbox each turn checks for
    // interruption (the compiler unrolls the inner loop, so it has no turns of its own).
    loop {
        for _ in 0..STEPS_PER_TURN {
            match sixteen(input, at, delimiters, out, plain_prefix_in_run) {
                Step::Found(end) => return end,
                Step::Short => return copy_tail(input, at, delimiters, out),
                Step::Plain => at += 16,
            }
        }
    }
}

/// What sixteen bytes from a position held.
enum Step {
    /// A byte that needs attention, at this position; the bytes before it are copied.
    Found(usize),
    /// Sixteen plain bytes, copied.
    Plain,
    /// Fewer than sixteen bytes are left; nothing copied.
    Short,
}

/// Checks (and copies) the sixteen bytes from `at`, testing them with `test` (one of the
/// `plain_prefix` functions).
///
/// The test's result decides the branch before anything is stored, and each branch stores on
/// its own: compiled from Wasm, Cranelift computes a value where its first use is, so a count
/// used inside the store's room check and again after it was computed twice (on long fields the
/// plugin ran 1.09× as fast this way, 2026-12-03).
#[inline(always)]
fn sixteen<S: Sink>(
    input: &[u8],
    at: usize,
    delimiters: Delimiters,
    out: &mut S,
    test: impl Fn(&[u8; 16], Delimiters) -> usize,
) -> Step {
    let Some(window) = input.get(at..at + 16) else {
        return Step::Short;
    };
    let window: &[u8; 16] = window.try_into().expect("sixteen bytes");
    let plain = test(window, delimiters);
    if plain < 16 {
        out.sixteen(window, plain);
        Step::Found(at + plain)
    } else {
        out.sixteen(window, 16);
        Step::Plain
    }
}

/// How many of the sixteen bytes come before the first one that needs attention (16 when none
/// does), with SSE2: four compares of all sixteen bytes at once and a bit mask. Signed, the
/// bytes below 0x20 and the ones from 0x80 are exactly those less than 0x20: one compare finds
/// both.
///
/// Only natively: in a Wasm sandbox the same with `simd128` in every step measured slower than
/// two words (0.90–0.96× the plugin's throughput, ten alternating runs, 2026-12-02), and so did
/// it in a field's first step alone (0.70× on short fields, 2026-12-03), so plugins test a
/// field's first sixteen bytes with `plain_prefix_by_words` and use SIMD only past them
/// ([`plain_prefix_in_run`]).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
#[expect(
    unsafe_code,
    reason = "the load of sixteen bytes for the SSE2 compares"
)]
fn plain_prefix(window: &[u8; 16], delimiters: Delimiters) -> usize {
    use core::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: the intrinsics need SSE2, which this build targets (the `cfg` above); the load
    // reads the sixteen bytes `window` refers to, and may read them unaligned.
    let mask = unsafe {
        let bytes = _mm_loadu_si128(window.as_ptr().cast());
        let attention = _mm_or_si128(
            _mm_or_si128(
                _mm_cmplt_epi8(bytes, _mm_set1_epi8(0x20)),
                _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8)),
            ),
            _mm_or_si128(
                _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8)),
                _mm_cmpeq_epi8(bytes, _mm_set1_epi8(delimiters.byte() as i8)),
            ),
        );
        _mm_movemask_epi8(attention)
    };
    (mask as u32 | 1 << 16).trailing_zeros() as usize
}

/// [`plain_prefix`] for other targets (Wasm among them): two words tested as [`next_special`]
/// tests them.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn plain_prefix(window: &[u8; 16], delimiters: Delimiters) -> usize {
    plain_prefix_by_words(window, delimiters)
}

/// [`plain_prefix`] for the bytes of a long run past its first sixteen: the same function
/// natively (and in Wasm without `simd128`).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn plain_prefix_in_run(window: &[u8; 16], delimiters: Delimiters) -> usize {
    plain_prefix(window, delimiters)
}

/// [`plain_prefix`] for the bytes of a long run past its first sixteen, with Wasm's `simd128`:
/// four compares of all sixteen bytes and a bit mask, as with SSE2 natively (signed, one
/// compare finds both the bytes below 0x20 and the ones from 0x80). In the long-run loop alone
/// it makes the plugin 1.11–1.15× faster than two words (2026-12-03): there the loop is small
/// and the vector constants stay in registers, while in a field's first step, where the whole
/// per-field loop competes for registers, it made the plugin slower.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
#[expect(unsafe_code, reason = "the load of sixteen bytes")]
fn plain_prefix_in_run(window: &[u8; 16], delimiters: Delimiters) -> usize {
    use core::arch::wasm32::{i8x16_bitmask, i8x16_eq, i8x16_lt, i8x16_splat, v128_load, v128_or};
    // SAFETY: the load reads the sixteen bytes `window` refers to (Wasm loads may be
    // unaligned).
    let bytes = unsafe { v128_load(window.as_ptr().cast()) };
    let attention = v128_or(
        v128_or(
            i8x16_lt(bytes, i8x16_splat(0x20)),
            i8x16_eq(bytes, i8x16_splat(b'"' as i8)),
        ),
        v128_or(
            i8x16_eq(bytes, i8x16_splat(b'\\' as i8)),
            i8x16_eq(bytes, i8x16_splat(delimiters.byte() as i8)),
        ),
    );
    (u32::from(i8x16_bitmask(attention)) | 1 << 16).trailing_zeros() as usize
}

/// [`plain_prefix`] in two words (for targets without SSE2; tests compare the two).
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), cfg(test))]
#[inline(always)]
fn plain_prefix_by_words(window: &[u8; 16], delimiters: Delimiters) -> usize {
    let (low, high) = window.split_at(8);
    let low = specials(
        u64::from_le_bytes(low.try_into().expect("eight bytes")),
        delimiters,
    );
    let high = specials(
        u64::from_le_bytes(high.try_into().expect("eight bytes")),
        delimiters,
    );
    if low != 0 {
        (low.trailing_zeros() / 8) as usize
    } else {
        8 + (high.trailing_zeros() / 8).min(8) as usize
    }
}

/// [`copy_plain`] for the last fifteen bytes or fewer of `input`.
#[inline(always)]
fn copy_tail<S: Sink>(input: &[u8], from: usize, delimiters: Delimiters, out: &mut S) -> usize {
    let end = next_special(input, from, delimiters);
    out.extend_from_slice(&input[from..end]);
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::out::Out;

    #[test]
    fn finds_the_same_byte_as_a_plain_loop() {
        for delimiters in [Delimiters::Unquoted, Delimiters::Quoted] {
            for special in 0..=255u8 {
                for position in 0..20 {
                    for filler in [b'a', b'!', 0x1f + 1, 0x7f, b'+', b'#', b'-', b'['] {
                        let mut input = vec![filler; 24];
                        input[position] = special;
                        // A special byte further on must not hide the first one.
                        input[23] = b'"';
                        for from in [0, 1, position] {
                            let expected = (from..input.len())
                                .find(|&at| is_special(input[at], delimiters))
                                .unwrap();
                            assert_eq!(
                                next_special(&input, from, delimiters),
                                expected,
                                "{special:#x} at {position} from {from} in {filler:#x} \
                                 ({delimiters:?})"
                            );
                            let mut out = Out::with_capacity(0);
                            assert_eq!(copy_plain(&input, from, delimiters, &mut out), expected);
                            assert_eq!(out.into_vec(), input[from..expected]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn long_runs_stop_at_the_first_special_byte_in_any_step_of_any_turn() {
        // Past the first sixteen bytes, runs of several turns of the unrolled loop, with the
        // byte to stop at in every one of a turn's steps and at every offset in a step.
        let turn = 16 * STEPS_PER_TURN;
        for delimiters in [Delimiters::Unquoted, Delimiters::Quoted] {
            for special in [b'"', b'\\', b'\n', 0x80, 0xff, 0x00, b','] {
                for position in 0..16 + 3 * turn {
                    let mut input = vec![b'x'; 16 + 3 * turn + 5];
                    input[position] = special;
                    let expected = if is_special(special, delimiters) {
                        position
                    } else {
                        input.len()
                    };
                    let mut out = Out::with_capacity(0);
                    assert_eq!(
                        copy_plain(&input, 0, delimiters, &mut out),
                        expected,
                        "{special:#x} at {position} ({delimiters:?})"
                    );
                    assert_eq!(out.into_vec(), input[..expected]);
                }
            }
        }
    }

    #[test]
    fn sixteen_bytes_at_once_find_the_first_special_byte() {
        for delimiters in [Delimiters::Unquoted, Delimiters::Quoted] {
            for special in 0..=255u8 {
                for position in 0..16 {
                    for filler in [b'a', 0x20, 0x7f, b'+', b'#', b'-'] {
                        let mut window = [filler; 16];
                        window[position] = special;
                        let expected = (0..16)
                            .find(|&at| is_special(window[at], delimiters))
                            .unwrap_or(16);
                        assert_eq!(plain_prefix(&window, delimiters), expected);
                        assert_eq!(plain_prefix_in_run(&window, delimiters), expected);
                        assert_eq!(plain_prefix_by_words(&window, delimiters), expected);
                        // A second special byte further on must not hide the first.
                        window[15] = b'"';
                        let expected = expected.min(15);
                        assert_eq!(plain_prefix(&window, delimiters), expected);
                        assert_eq!(plain_prefix_in_run(&window, delimiters), expected);
                        assert_eq!(plain_prefix_by_words(&window, delimiters), expected);
                    }
                }
            }
        }
    }

    #[test]
    fn special_bytes_are_exactly_the_ones_conversion_handles() {
        let unquoted: Vec<u8> = (0..=255u8)
            .filter(|&byte| is_special(byte, Delimiters::Unquoted))
            .filter(|byte| (0x20..0x80).contains(byte))
            .collect();
        assert_eq!(unquoted, b"\",\\");
        assert!(!is_special(b',', Delimiters::Quoted));
        assert!(is_special(b'\n', Delimiters::Quoted));
        assert!(is_special(0xc3, Delimiters::Quoted));
        assert_eq!(next_special(b"", 0, Delimiters::Quoted), 0);
        assert_eq!(next_special(b"abc", 3, Delimiters::Quoted), 3);
    }
}
