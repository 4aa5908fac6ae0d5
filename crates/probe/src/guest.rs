//! Guest code generation with iced-x86's CodeAssembler (64-bit).
//!
//! Registers on entry, as in kvmp.h: `rbx` = DATA_GPA, `rdi` = report page, `rsi` = marker page.
//! Each access ends in a known MMIO exit (CPL3 cannot use `out`/`hlt`, realkvm.md §0):
//! a read reports its value to `[rdi + 8*i]`, a write is followed by `mov dword [rsi + 8*i], i`.
//! The per-access offset lets the VMM check it is in step with the guest.

use crate::layout::{mark_off, va_of, DATA_END, DATA_GPA, FINAL_MARK_OFF, PAGE};
use crate::plan::GuestOp;
use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

/// Where one access sits in the generated code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AccessSite {
    /// rip of the instruction that touches the data gpa (where an EFAULT leaves rip).
    pub insn_rip: u64,
    /// rip of the next access block: where a skipped access resumes.
    pub next_rip: u64,
}

/// Assembled code for one vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GuestCode {
    /// rip of the first instruction.
    pub base: u64,
    /// Machine code.
    pub bytes: Vec<u8>,
    /// One entry per access.
    pub sites: Vec<AccessSite>,
}

fn asm_err(e: IcedError) -> String {
    format!("assembler: {e}")
}

/// The memory operand of an access: `rbx`-relative in the low data range, else through `r8`
/// loaded with the gpa's virtual address (`layout::va_of`: every far page is mapped there).
fn operand(a: &mut CodeAssembler, gpa: u64) -> Result<AsmMemoryOperand, IcedError> {
    if (DATA_GPA..DATA_END).contains(&gpa) {
        return Ok(rbx + (gpa - DATA_GPA) as i32);
    }
    a.mov(r8, va_of(gpa))?;
    Ok(r8 + 0)
}

/// Emits one access; returns (index of the data-touching instruction, index of the block start).
fn emit(a: &mut CodeAssembler, i: usize, op: &GuestOp) -> Result<(usize, usize), IcedError> {
    let start = a.instructions().len();
    let off = mark_off(i) as i32;
    let touch;
    match *op {
        GuestOp::Read { gpa, size } => {
            let m = operand(a, gpa)?;
            touch = a.instructions().len();
            match size {
                1 => a.movzx(eax, byte_ptr(m))?,
                2 => a.movzx(eax, word_ptr(m))?,
                4 => a.mov(eax, dword_ptr(m))?,
                _ => a.mov(rax, qword_ptr(m))?,
            }
            if size == 8 {
                a.mov(qword_ptr(rdi + off), rax)?;
            } else {
                a.mov(dword_ptr(rdi + off), eax)?;
            }
        }
        GuestOp::Write { gpa, size, value } => {
            let m = operand(a, gpa)?;
            if size == 8 {
                a.mov(rax, value)?;
            }
            touch = a.instructions().len();
            match size {
                1 => a.mov(byte_ptr(m), value as u8 as u32)?,
                2 => a.mov(word_ptr(m), value as u16 as u32)?,
                4 => a.mov(dword_ptr(m), value as u32)?,
                _ => a.mov(qword_ptr(m), rax)?,
            }
            a.mov(dword_ptr(rsi + off), i as u32)?;
        }
    }
    Ok((touch, start))
}

/// Assembles a vCPU program at `base`: the accesses, then the final marker in a loop
/// (kvmp.h `END`; the VMM never resumes the vCPU after it).
pub(crate) fn assemble(program: &[GuestOp], base: u64) -> Result<GuestCode, String> {
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    let mut idx = Vec::with_capacity(program.len());
    for (i, op) in program.iter().enumerate() {
        idx.push(emit(&mut a, i, op).map_err(asm_err)?);
    }
    let end_idx = a.instructions().len();
    let mut fin = a.create_label();
    a.set_label(&mut fin).map_err(asm_err)?;
    a.mov(dword_ptr(rsi + FINAL_MARK_OFF as i32), u32::MAX)
        .map_err(asm_err)?;
    a.jmp(fin).map_err(asm_err)?;
    let res = a
        .assemble_options(base, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .map_err(asm_err)?;
    let offs = &res.inner.new_instruction_offsets;
    let rip = |k: usize| base + u64::from(offs[k]);
    let sites = idx
        .iter()
        .enumerate()
        .map(|(i, &(touch, _))| AccessSite {
            insn_rip: rip(touch),
            next_rip: idx.get(i + 1).map_or(rip(end_idx), |&(_, s)| rip(s)),
        })
        .collect();
    Ok(GuestCode {
        base,
        bytes: res.inner.code_buffer,
        sites,
    })
}

/// Code for the timing loop (timing.c `gt` and `grt`), assembled at `base`.
/// Returns the bytes and the rip of the round-trip loop.
///
/// Main entry: one warm-up report, then per page `mov eax,[rbx]; report; rbx += 4096` for `rcx`
/// pages, then the final marker. Round-trip entry: report forever.
pub(crate) fn timing_code(base: u64) -> Result<(Vec<u8>, u64), String> {
    let build = || -> Result<(Vec<u8>, u64), IcedError> {
        let mut a = CodeAssembler::new(64)?;
        let mut lp = a.create_label();
        let mut fin = a.create_label();
        let mut rt = a.create_label();
        a.mov(dword_ptr(rdi), eax)?;
        a.set_label(&mut lp)?;
        a.mov(eax, dword_ptr(rbx))?;
        a.mov(dword_ptr(rdi), eax)?;
        a.add(rbx, PAGE as i32)?;
        a.dec(ecx)?;
        a.jnz(lp)?;
        a.set_label(&mut fin)?;
        a.mov(dword_ptr(rsi + FINAL_MARK_OFF as i32), eax)?;
        a.jmp(fin)?;
        a.set_label(&mut rt)?;
        a.mov(dword_ptr(rdi), eax)?;
        a.jmp(rt)?;
        let res = a.assemble_options(base, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)?;
        let rt_ip = res.label_ip(&rt)?;
        Ok((res.inner.code_buffer, rt_ip))
    };
    build().map_err(asm_err)
}

/// Code that spins forever without exiting (`jmp $`): used to exercise the watchdog.
pub(crate) fn spin_code(base: u64) -> Result<Vec<u8>, String> {
    let build = || -> Result<Vec<u8>, IcedError> {
        let mut a = CodeAssembler::new(64)?;
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.jmp(l)?;
        a.assemble(base)
    };
    build().map_err(asm_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::CODE_GPA;
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    fn disasm(code: &GuestCode) -> Vec<(u64, String)> {
        let mut d = Decoder::with_ip(64, &code.bytes, code.base, DecoderOptions::NONE);
        let mut f = IntelFormatter::new();
        f.options_mut().set_space_after_operand_separator(true);
        let mut out = Vec::new();
        for ins in &mut d {
            let mut s = String::new();
            f.format(&ins, &mut s);
            out.push((ins.ip(), s));
        }
        out
    }

    #[test]
    fn generated_code_decodes_to_the_expected_instructions() {
        let prog = [
            GuestOp::Read {
                gpa: 0x10004,
                size: 4,
            },
            GuestOp::Write {
                gpa: 0x10000,
                size: 4,
                value: 0xC0C0_C0C0,
            },
            GuestOp::Read {
                gpa: 0x11000,
                size: 1,
            },
            GuestOp::Read {
                gpa: 0x10008,
                size: 2,
            },
            GuestOp::Write {
                gpa: 0x10008,
                size: 1,
                value: 0x77,
            },
            GuestOp::Write {
                gpa: 0x10010,
                size: 8,
                value: 0x1122_3344_5566_7788,
            },
            GuestOp::Read {
                gpa: 0x10010,
                size: 8,
            },
            GuestOp::Write {
                gpa: 0x10020,
                size: 2,
                value: 0xBEEF,
            },
        ];
        let code = assemble(&prog, CODE_GPA).unwrap();
        let text: Vec<String> = disasm(&code).into_iter().map(|(_, s)| s).collect();
        let want = [
            "mov eax, [rbx+4]",
            "mov [rdi], eax",
            "mov dword ptr [rbx], 0C0C0C0C0h",
            "mov dword ptr [rsi+8], 1",
            "movzx eax, byte ptr [rbx+1000h]",
            "mov [rdi+10h], eax",
            "movzx eax, word ptr [rbx+8]",
            "mov [rdi+18h], eax",
            "mov byte ptr [rbx+8], 77h",
            "mov dword ptr [rsi+20h], 4",
            "mov rax, 1122334455667788h",
            "mov [rbx+10h], rax",
            "mov dword ptr [rsi+28h], 5",
            "mov rax, [rbx+10h]",
            "mov [rdi+30h], rax",
            "mov word ptr [rbx+20h], 0BEEFh",
            "mov dword ptr [rsi+38h], 7",
            "mov dword ptr [rsi+0FF8h], 0FFFFFFFFh",
            "jmp 0000000000001000h",
        ];
        assert_eq!(text.len(), want.len(), "{text:#?}");
        for (got, want) in text.iter().zip(want) {
            if want.starts_with("jmp") {
                assert!(got.starts_with("jmp"), "{got}");
            } else {
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn access_sites_point_at_the_data_instruction_and_the_next_block() {
        let prog = [
            GuestOp::Write {
                gpa: 0x10010,
                size: 8,
                value: 1,
            },
            GuestOp::Read {
                gpa: 0x10000,
                size: 4,
            },
        ];
        let code = assemble(&prog, CODE_GPA).unwrap();
        let ins = disasm(&code);
        // access 0: [mov rax,imm64] [mov [rbx+10h],rax] [marker]; access 1 starts at ins[3]
        assert_eq!(code.sites[0].insn_rip, ins[1].0);
        assert_eq!(code.sites[0].next_rip, ins[3].0);
        assert_eq!(code.sites[1].insn_rip, ins[3].0);
        assert_eq!(code.sites[1].next_rip, ins[5].0);
        assert!(ins[5].1.starts_with("mov dword ptr [rsi+0FF8h]"));
    }

    #[test]
    fn timing_and_spin_code_decode() {
        let (bytes, rt) = timing_code(CODE_GPA).unwrap();
        let code = GuestCode {
            base: CODE_GPA,
            bytes,
            sites: vec![],
        };
        let ins = disasm(&code);
        assert_eq!(ins[0].1, "mov [rdi], eax");
        assert_eq!(ins[1].1, "mov eax, [rbx]");
        assert_eq!(ins[3].1, "add rbx, 1000h");
        assert!(ins.iter().any(|(ip, s)| *ip == rt && s == "mov [rdi], eax"));
        let spin = spin_code(CODE_GPA).unwrap();
        assert_eq!(spin, vec![0xEB, 0xFE]);
    }
}
