//! Kernel-side packet steering: a classic BPF program on the `SO_REUSEPORT`
//! group that sends each packet to the socket of the shard named in its
//! destination connection id (see [`crate::cid`]).
//!
//! The program sees the UDP payload (the kernel pulls the UDP header first)
//! and returns an index into the group's socket array, which is the order the
//! sockets were bound in: shard K's socket is index K. Returning an index past
//! the end makes the kernel fall back to its 4-tuple hash, which is what new
//! connections (clients' Initial packets) want. Every Initial gets the hash:
//! whether one answers a connection a shard dialled takes a keyed check
//! (`cid::DialKey`) that classic BPF cannot do, so the shard that receives
//! it asks [`crate::cid::owning_shard`] and forwards it over the mesh (one
//! packet per dial, rare).

use std::io;
use std::os::fd::AsRawFd;

use crate::cid::CID_LEN;

const BPF_LD: u16 = 0x00;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_ALU: u16 = 0x04;
const BPF_AND: u16 = 0x50;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;
const BPF_A: u16 = 0x10;

/// "No opinion": any index at or past the socket count selects by hash.
const FALLBACK: u32 = u32::MAX;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The steering program: [`crate::cid::owning_shard`], except that every
/// Initial is left to the hash.
pub fn program() -> Vec<libc::sock_filter> {
    let ld_byte = |offset| stmt(BPF_LD | BPF_B | BPF_ABS, offset);
    let ret_a = stmt(BPF_RET | BPF_A, 0);
    vec![
        /* 0 */ ld_byte(0),
        /* 1 */ jump(BPF_JMP | BPF_JSET | BPF_K, 0x80, 2, 0), // long header -> 4
        /* 2 */ ld_byte(1), // short header: first byte of the destination id
        /* 3 */ ret_a,
        /* 4 */ stmt(BPF_ALU | BPF_AND | BPF_K, 0x30), // long packet type
        /* 5 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 0x10, 5, 0), // 0-RTT -> 11
        /* 6 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 0x00, 4, 0), // Initial -> 11
        /* 7 */ ld_byte(5), // destination id length
        /* 8 */ jump(BPF_JMP | BPF_JEQ | BPF_K, CID_LEN as u32, 0, 2), // not ours -> 11
        /* 9 */ ld_byte(6), // first byte of the destination id
        /* 10 */ ret_a,
        /* 11 */ stmt(BPF_RET | BPF_K, FALLBACK),
    ]
}

/// Attach the program to the reuseport group that `socket` belongs to. Call
/// after every shard socket is bound, so that indices are final.
pub fn attach(socket: &impl AsRawFd) -> io::Result<()> {
    let mut filter = program();
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel
    // copies the program before returning.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &prog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the instructions the program uses, so the
    /// program can be checked against `owning_shard` without a kernel.
    fn run(program: &[libc::sock_filter], packet: &[u8]) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0usize;
        loop {
            let insn = program[pc];
            pc += 1;
            match insn.code {
                c if c == BPF_LD | BPF_B | BPF_ABS => match packet.get(insn.k as usize) {
                    Some(&b) => a = b as u32,
                    None => return 0, // classic BPF aborts with 0 on a short packet
                },
                c if c == BPF_ALU | BPF_AND | BPF_K => a &= insn.k,
                c if c == BPF_JMP | BPF_JSET | BPF_K => {
                    pc += if a & insn.k != 0 { insn.jt } else { insn.jf } as usize
                }
                c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                    pc += if a == insn.k { insn.jt } else { insn.jf } as usize
                }
                c if c == BPF_RET | BPF_A => return a,
                c if c == BPF_RET | BPF_K => return insn.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    /// `owning_shard`, but Initials (checked with the key in user space)
    /// fall back to the hash.
    fn expected(packet: &[u8]) -> u32 {
        let initial = packet[0] & 0xb0 == 0x80;
        let key = crate::cid::DialKey::random();
        match crate::cid::owning_shard(packet, &key) {
            Some(shard) if !initial => u32::from(shard),
            _ => FALLBACK,
        }
    }

    #[test]
    fn program_agrees_with_owning_shard_on_every_packet_kind() {
        let program = program();
        let mut handshake = vec![0xe0, 0, 0, 0, 1, CID_LEN as u8, 3];
        handshake.extend_from_slice(&[9; CID_LEN - 1]);
        let mut initial = handshake.clone();
        initial[0] = 0xc0;
        let mut zero_rtt = handshake.clone();
        zero_rtt[0] = 0xd0;
        let mut foreign_len = handshake.clone();
        foreign_len[5] = 8;
        let mut foreign_initial = initial.clone();
        foreign_initial[5] = 8;
        let short = vec![0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        for packet in [
            handshake,
            initial,
            zero_rtt,
            foreign_len,
            foreign_initial,
            short,
        ] {
            assert_eq!(run(&program, &packet), expected(&packet), "{packet:02x?}");
        }
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        let program = program();
        for (i, insn) in program.iter().enumerate() {
            if insn.code & 0x07 == BPF_JMP {
                assert!(i + 1 + (insn.jt as usize) < program.len());
                assert!(i + 1 + (insn.jf as usize) < program.len());
            }
        }
        assert_eq!(program.last().map(|i| i.code), Some(BPF_RET | BPF_K));
    }
}
