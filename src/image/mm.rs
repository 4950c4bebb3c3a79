//! The mm record (mm-PID.img): the address-space wide values of a process,
//! as PR_SET_MM_MAP takes them back, the auxiliary vector and the executable.
//! The VMAs follow it as vma records (see [`super::vma`]), `nr_vmas` of them.
//!
//! ```text
//!  u64 start_code end_code start_data end_data start_brk brk start_stack
//!      arg_start arg_end env_start env_end
//!  list<(u64 type, u64 value)> auxv | path exe | file id exe_id | u32 nr_vmas
//! ```

use super::codec::{Reader, Writer};
use super::files::FileId;
use super::record::Record;
use super::value::Value;
use super::{ImageError, PATH_MAX};

/// More auxv entries than any kernel passes (AT_VECTOR_SIZE is about 50).
pub const MAX_AUXV: usize = 256;

/// The address-space wide values of a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mm {
    /// start_code, end_code.
    pub code: (u64, u64),
    /// start_data, end_data.
    pub data: (u64, u64),
    /// start_brk, brk.
    pub brk: (u64, u64),
    /// start_stack.
    pub start_stack: u64,
    /// arg_start, arg_end.
    pub arg: (u64, u64),
    /// env_start, env_end.
    pub env: (u64, u64),
    /// The auxiliary vector, (AT_* type, value) pairs without AT_NULL.
    pub auxv: Vec<(u64, u64)>,
    /// /proc/PID/exe.
    pub exe: Vec<u8>,
    /// The executable's identity.
    pub exe_id: FileId,
    /// How many vma records follow.
    pub nr_vmas: u32,
}

impl Record for Mm {
    const KIND: u16 = 11;
    const NAME: &'static str = "mm";

    fn encode(&self, w: &mut Writer) {
        for (a, b) in [self.code, self.data, self.brk] {
            w.u64(a);
            w.u64(b);
        }
        w.u64(self.start_stack);
        for (a, b) in [self.arg, self.env] {
            w.u64(a);
            w.u64(b);
        }
        w.list(&self.auxv, |w, (t, v)| {
            w.u64(*t);
            w.u64(*v);
        });
        w.bytes(&self.exe);
        self.exe_id.encode(w);
        w.u32(self.nr_vmas);
    }

    fn decode(r: &mut Reader) -> Result<Self, ImageError> {
        let pair = |r: &mut Reader, what: &str| -> Result<(u64, u64), ImageError> {
            let (a, b) = (r.u64()?, r.u64()?);
            if a > b {
                return Err(r.error(format!("{what} range {a:#x}-{b:#x} ends before it starts")));
            }
            Ok((a, b))
        };
        let code = pair(r, "code")?;
        let data = pair(r, "data")?;
        let brk = pair(r, "brk")?;
        let start_stack = r.u64()?;
        let arg = pair(r, "arguments")?;
        let env = pair(r, "environment")?;
        Ok(Mm {
            code,
            data,
            brk,
            start_stack,
            arg,
            env,
            auxv: r.list("auxv", MAX_AUXV, 16, |r| Ok((r.u64()?, r.u64()?)))?,
            exe: r.bytes("exe", PATH_MAX as usize)?,
            exe_id: FileId::decode(r)?,
            nr_vmas: r.u32()?,
        })
    }

    fn to_value(&self) -> Value {
        let range = |(a, b): (u64, u64)| Value::List(vec![Value::Hex(a), Value::Hex(b)]);
        Value::Obj(vec![
            ("code", range(self.code)),
            ("data", range(self.data)),
            ("brk", range(self.brk)),
            ("start_stack", Value::Hex(self.start_stack)),
            ("arg", range(self.arg)),
            ("env", range(self.env)),
            (
                "auxv",
                Value::List(
                    self.auxv
                        .iter()
                        .map(|(t, v)| Value::List(vec![Value::U(*t), Value::Hex(*v)]))
                        .collect(),
                ),
            ),
            ("exe", Value::path(&self.exe)),
            ("exe_id", self.exe_id.to_value()),
            ("nr_vmas", Value::U(self.nr_vmas as u64)),
        ])
    }
}
