//! A made-up H.264 stream that `moq import avc3` accepts: 16x16, one I_PCM
//! macroblock per frame with the frame number in its luma samples, so no
//! encoder is needed and every access unit that comes out of `moq export`
//! can be compared byte for byte with the one that went in.

/// Bits of an H.264 RBSP, most significant first.
#[derive(Default)]
struct Bits(Vec<bool>);

impl Bits {
    fn u(&mut self, n: u32, v: u32) -> &mut Self {
        for i in (0..n).rev() {
            self.0.push((v >> i) & 1 == 1);
        }
        self
    }

    /// Exp-Golomb ue(v).
    fn ue(&mut self, v: u32) -> &mut Self {
        let v = v + 1;
        let n = 32 - v.leading_zeros();
        self.u(n - 1, 0).u(n, v)
    }

    fn align(&mut self) -> &mut Self {
        while !self.0.len().is_multiple_of(8) {
            self.0.push(false);
        }
        self
    }

    /// rbsp_trailing_bits, then the NAL with its start code and emulation
    /// prevention.
    fn nal(&mut self, header: u8) -> Vec<u8> {
        self.0.push(true);
        self.align();
        let rbsp: Vec<u8> = self
            .0
            .chunks(8)
            .map(|b| b.iter().fold(0u8, |acc, &bit| acc << 1 | bit as u8))
            .collect();
        let mut out = vec![0, 0, 0, 1, header];
        let mut zeros = 0;
        for b in rbsp {
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            out.push(b);
            zeros = if b == 0 { zeros + 1 } else { 0 };
        }
        out
    }
}

/// SPS: Baseline, level 1.0, 16x16 (one macroblock), POC type 2, no VUI.
fn sps() -> Vec<u8> {
    let mut b = Bits::default();
    b.u(8, 66).u(8, 0xc0).u(8, 10); // profile, constraint_set0/1, level
    b.ue(0).ue(0).ue(2).ue(1).u(1, 0); // sps id, log2_max_frame_num-4, poc type, refs, gaps
    b.ue(0).ue(0).u(1, 1).u(1, 1).u(1, 0).u(1, 0); // 1x1 MBs, frame_mbs_only, 8x8, no crop, no VUI
    b.nal(0x67)
}

/// PPS: CAVLC, one slice group, no deblocking control.
fn pps() -> Vec<u8> {
    let mut b = Bits::default();
    b.ue(0).ue(0).u(1, 0).u(1, 0).ue(0).ue(0).ue(0);
    b.u(1, 0).u(2, 0).ue(0).ue(0).ue(0).u(1, 0).u(1, 0).u(1, 0);
    b.nal(0x68)
}

/// Access unit `n` (< 40000): SPS, PPS and an IDR slice of one I_PCM
/// macroblock whose first two luma samples are `n` in base 200 (plus 16, to
/// stay in video range; the rest repeat the first).
pub fn access_unit(n: u32) -> Vec<u8> {
    let mut b = Bits::default();
    b.ue(0).ue(7).ue(0).u(4, 0).ue(n % 2); // first_mb, slice I, pps, frame_num, idr_pic_id
    b.u(1, 0).u(1, 0).ue(0); // no_output_of_prior_pics, long_term_ref, slice_qp_delta se(0)
    b.ue(25).align(); // mb_type I_PCM, pcm_alignment_zero_bits
    let (low, high) = (16 + n % 200, 16 + n / 200 % 200);
    for i in 0..256 {
        b.u(8, if i == 1 { high } else { low });
    }
    for _ in 0..128 {
        b.u(8, 128);
    }
    let mut au = sps();
    au.extend(pps());
    au.extend(b.nal(0x65));
    au
}

/// The frame numbers of the complete access units in `out`, in order; `None`
/// for an access unit that is not byte-identical to one we made.
pub fn frames_in(out: &[u8]) -> Vec<Option<u32>> {
    let sps = sps();
    let starts: Vec<usize> = out
        .windows(sps.len())
        .enumerate()
        .filter(|(_, w)| *w == sps.as_slice())
        .map(|(i, _)| i)
        .collect();
    let len = access_unit(0).len();
    starts
        .iter()
        .filter(|&&s| s + len <= out.len())
        .map(|&s| {
            let au = &out[s..s + len];
            // The samples end with 128 chroma bytes and the trailing 0x80.
            let luma = &au[len - 1 - 128 - 256..];
            let n = (luma[1] as u32).wrapping_sub(16) * 200 + (luma[0] as u32).wrapping_sub(16);
            (n < 40000 && access_unit(n) == au).then_some(n)
        })
        .collect()
}

#[test]
fn the_made_up_stream_round_trips_through_the_parser() {
    let mut out = Vec::new();
    for n in [0, 1, 2, 199, 200, 220, 39999] {
        out.extend(access_unit(n));
    }
    out.extend(&sps()[..7]); // a torn trailing unit is ignored
    assert_eq!(
        frames_in(&out),
        [0, 1, 2, 199, 200, 220, 39999].map(Some).to_vec()
    );
    // Golden bytes, checked by hand against H.264 7.3.2.1/7.3.2.2.
    assert_eq!(sps(), [0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x0a, 0xda, 0x79]);
    assert_eq!(pps(), [0, 0, 0, 1, 0x68, 0xce, 0x38, 0x80]);
}
