//! The operations file: one operation a line, `name key=value ...`; a
//! fork's operations follow it, indented four spaces more. Lines starting
//! with `#` are comments. The first line that is not is `tag 0x…` (the
//! parent's user_data tag).
//!
//! ```text
//! tag 0x2c41d3e0
//! open rdonly=0
//! REGISTER file=0 fd=0 buf=3 range=whole access=3 arg=normal:12/v1/-
//! fork tag=0x8000132a end=exit-busy
//!     ring-submit file=1 fd=0 sqes=2,0,0x200,reg:0:0x10,buf:1:0x33,0x9,-,- wake=1 resync=0 start=0 tail=0
//! finish abrupt=0 drain=5 unregister=2
//! ```
//!
//! Values never contain spaces; compound values separate their parts with
//! `:` (variants), `/` (an ioctl argument), `,` (an entry's fields) and
//! `;` (a list of entries).

use super::op::*;

/// A value of an operation's field, as text.
pub(crate) trait Field: Sized {
    /// The value's text (no whitespace).
    fn put(&self) -> String;
    /// Parses the text [`Field::put`] writes.
    fn get(s: &str) -> Option<Self>;
    /// The value of a field absent from the line (nested operations are
    /// not on their parent's line).
    fn absent() -> Option<Self> {
        None
    }
    /// Whether the field is left off the line.
    const NESTED: bool = false;
}

/// Appends ` key=value` (nothing for nested operations).
pub(crate) fn put_field<T: Field>(out: &mut String, key: &str, v: &T) {
    if !T::NESTED {
        out.push(' ');
        out.push_str(key);
        out.push('=');
        out.push_str(&v.put());
    }
}

/// The `key=value` pairs of one line, consumed by [`Fields::take`].
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    /// The field `key`, parsed.
    pub(crate) fn take<T: Field>(&mut self, key: &str) -> Result<T, String> {
        match self.0.iter().position(|(k, _)| k == key) {
            Some(i) => {
                let (_, v) = self.0.remove(i);
                T::get(&v).ok_or_else(|| format!("bad value {v:?} for {key}"))
            }
            None => T::absent().ok_or_else(|| format!("missing {key}=")),
        }
    }
}

/// A number in decimal or `0x` hex.
pub fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

macro_rules! num_field {
    ($($t:ty, $fmt:literal);*) => {$(
        impl Field for $t {
            fn put(&self) -> String {
                format!($fmt, self)
            }
            fn get(s: &str) -> Option<Self> {
                parse_num(s).and_then(|v| <$t>::try_from(v).ok())
            }
        }
    )*};
}

num_field!(u8, "{}"; u16, "{}"; u32, "{}"; u64, "{:#x}");

impl Field for i64 {
    fn put(&self) -> String {
        self.to_string()
    }
    fn get(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

impl Field for bool {
    fn put(&self) -> String {
        u8::from(*self).to_string()
    }
    fn get(s: &str) -> Option<Self> {
        match s {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        }
    }
}

impl<T: Field> Field for Option<T> {
    fn put(&self) -> String {
        self.as_ref().map_or_else(|| "-".into(), T::put)
    }
    fn get(s: &str) -> Option<Self> {
        if s == "-" {
            Some(None)
        } else {
            T::get(s).map(Some)
        }
    }
}

impl Field for (u32, u32) {
    fn put(&self) -> String {
        format!("{}:{}", self.0, self.1)
    }
    fn get(s: &str) -> Option<Self> {
        let (a, b) = s.split_once(':')?;
        Some((u32::get(a)?, u32::get(b)?))
    }
}

/// `tag` or `tag:a:b…`: the tag and the parts after it.
fn split(s: &str) -> (&str, Vec<&str>) {
    let mut it = s.split(':');
    let tag = it.next().unwrap_or("");
    (tag, it.collect())
}

/// Parses `parts` as exactly `N` numbers.
fn nums<const N: usize>(parts: &[&str]) -> Option<[u64; N]> {
    if parts.len() != N {
        return None;
    }
    let mut out = [0; N];
    for (o, p) in out.iter_mut().zip(parts) {
        *o = parse_num(p)?;
    }
    Some(out)
}

fn n32(v: u64) -> Option<u32> {
    u32::try_from(v).ok()
}

/// Implements [`Field`] for an enum whose variants are `tag` or
/// `tag:number...` (numbers are printed in hex where marked `x`).
macro_rules! tagged {
    ($t:ident { $($tag:literal => $var:ident $(($($x:ident : $ft:ty),*))?),* $(,)? }) => {
        impl Field for $t {
            #[allow(unused_mut)]
            fn put(&self) -> String {
                match self {
                    $($t::$var $(($($x),*))? => {
                        let mut s = String::from($tag);
                        $($( s.push(':'); s.push_str(&Field::put($x)); )*)?
                        s
                    })*
                }
            }
            fn get(s: &str) -> Option<Self> {
                let (tag, parts) = split(s);
                let mut _it = parts.iter();
                let v = match tag {
                    $($tag => $t::$var $(($( <$ft as Field>::get(_it.next()?)? ),*))?,)*
                    _ => return None,
                };
                _it.next().is_none().then_some(v)
            }
        }
    };
}

tagged!(Place {
    "normal" => Normal(a: Pick),
    "ro" => ReadOnly(a: Pick),
    "straddle" => Straddle(a: Pick),
    "null" => Null,
    "wild" => Wild(a: u8),
});

tagged!(Size {
    "v1" => V1,
    "above" => Above(a: u16),
    "far" => Far(a: u16),
    "max" => Max,
    "below" => Below(a: Pick),
    "zero" => Zero,
});

tagged!(BufProt { "rd" => Rd, "none" => None, "rw" => Rw });
tagged!(RingProt { "rd" => Rd, "none" => None, "rw" => Rw, "rdx" => RdExec });
tagged!(MremapHow { "move" => Move(a: Pick), "grow" => Grow, "shrink" => Shrink(a: u8) });
tagged!(Handle {
    "live" => Live(a: Pick),
    "dead" => Dead(a: Pick),
    "foreign" => Foreign(a: Pick),
    "value" => Value(a: u64),
});
tagged!(SubmitAt {
    "heap" => Heap,
    "scratch" => Scratch(a: u8),
    "null" => Null(a: u32),
    "kernel" => Kernel(a: u32),
});
tagged!(Addr {
    "reg" => InReg(a: Pick, b: u64),
    "end" => RegEnd(a: Pick, b: u64),
    "buf" => InBuf(a: Pick, b: u64),
    "tomb" => InTomb(a: Pick, b: u64),
    "ring" => InRing(a: Pick, b: u64),
    "abs" => Abs(a: u64),
});
tagged!(Rsvd { "r0" => R0(a: u16), "r1" => R1(a: u32), "r2" => R2(a: u8, b: u64) });
tagged!(Tail {
    "far" => Far(a: u32),
    "behind" => Behind(a: u32),
    "near" => Near(a: u32),
    "any" => Any(a: u32),
});
tagged!(HdrField { "cq_head" => CqHead, "sq_head" => SqHead, "cq_tail" => CqTail, "flags" => Flags });
tagged!(Change { "add" => Add(a: u32), "sub" => Sub(a: u32), "set" => Set(a: u32) });
tagged!(ChildEnd { "drain" => Drain, "exit" => Exit, "exit-busy" => ExitBusy });
tagged!(RegRange {
    "whole" => Whole,
    "pages" => Pages(a: Pick, b: Pick),
    "plus-page" => PlusPage,
    "misaligned" => Misaligned(a: u16),
    "short" => Short(a: u16),
    "zero" => Zero,
    "overflow" => Overflow,
    "too-large" => TooLarge,
    "tomb" => Tomb(a: Pick),
    "abs" => Abs(a: u64, b: u64),
    "ring" => Ring(a: Pick),
});

impl Field for MapHow {
    fn put(&self) -> String {
        match self {
            MapHow::Map { slot, rw } => format!("map:{slot}:{}", if *rw { "rw" } else { "rd" }),
            MapHow::Refused(k) => format!("refused:{k}"),
        }
    }
    fn get(s: &str) -> Option<Self> {
        match split(s) {
            ("map", p) if p.len() == 2 => Some(MapHow::Map {
                slot: n32(parse_num(p[0])?)?,
                rw: match p[1] {
                    "rw" => true,
                    "rd" => false,
                    _ => return None,
                },
            }),
            ("refused", p) => Some(MapHow::Refused(u8::try_from(nums::<1>(&p)?[0]).ok()?)),
            _ => None,
        }
    }
}

impl Field for Pages {
    fn put(&self) -> String {
        match self {
            Pages::Whole => "whole".into(),
            Pages::Part { first, count } => format!("part:{first}:{count}"),
        }
    }
    fn get(s: &str) -> Option<Self> {
        match split(s) {
            ("whole", p) if p.is_empty() => Some(Pages::Whole),
            ("part", p) => {
                let [a, b] = nums::<2>(&p)?;
                Some(Pages::Part { first: u8::try_from(a).ok()?, count: u8::try_from(b).ok()? })
            }
            _ => None,
        }
    }
}

impl Field for Run {
    fn put(&self) -> String {
        format!("{}:{}:{}", self.at, self.first, self.count)
    }
    fn get(s: &str) -> Option<Self> {
        let p: Vec<&str> = s.split(':').collect();
        let [a, f, c] = nums::<3>(&p)?;
        Some(Run { at: n32(a)?, first: n32(f)?, count: n32(c)? })
    }
}

impl Field for Arg {
    fn put(&self) -> String {
        format!(
            "{}/{}/{}",
            self.place.put(),
            self.size.put(),
            self.bits.map_or_else(|| "-".into(), |b| format!("{b:#x}"))
        )
    }
    fn get(s: &str) -> Option<Self> {
        let mut it = s.split('/');
        let place = Place::get(it.next()?)?;
        let size = Size::get(it.next()?)?;
        let bits = Option::<u16>::get(it.next()?)?;
        it.next().is_none().then_some(Arg { place, size, bits })
    }
}

impl Field for Sqe {
    fn put(&self) -> String {
        format!(
            "{},{},{:#x},{},{},{:#x},{},{}",
            self.opcode,
            self.flags,
            self.len,
            self.src.put(),
            self.dst.put(),
            self.value,
            self.rsvd.put(),
            self.edge.put()
        )
    }
    fn get(s: &str) -> Option<Self> {
        let p: Vec<&str> = s.split(',').collect();
        if p.len() != 8 {
            return None;
        }
        Some(Sqe {
            opcode: u8::get(p[0])?,
            flags: u8::get(p[1])?,
            len: u64::get(p[2])?,
            src: Addr::get(p[3])?,
            dst: Addr::get(p[4])?,
            value: u64::get(p[5])?,
            rsvd: Option::<Rsvd>::get(p[6])?,
            edge: Option::<(u32, u32)>::get(p[7])?,
        })
    }
}

impl Field for Vec<Sqe> {
    fn put(&self) -> String {
        if self.is_empty() {
            return "-".into();
        }
        self.iter().map(Sqe::put).collect::<Vec<_>>().join(";")
    }
    fn get(s: &str) -> Option<Self> {
        if s == "-" {
            return Some(Vec::new());
        }
        s.split(';').map(Sqe::get).collect()
    }
}

impl Field for Vec<Op> {
    const NESTED: bool = true;
    fn put(&self) -> String {
        String::new()
    }
    fn get(_: &str) -> Option<Self> {
        None
    }
    fn absent() -> Option<Self> {
        Some(Vec::new())
    }
}

/// One operation's line (without its nested operations).
pub fn op_line(op: &Op) -> String {
    let mut s = op.name().to_string();
    op.put_fields(&mut s);
    s
}

/// Parses one line (nested operations come separately).
pub fn parse_line(line: &str) -> Result<Op, String> {
    let mut words = line.split_whitespace();
    let name = words.next().ok_or("empty line")?;
    let mut pairs = Vec::new();
    for w in words {
        let (k, v) = w.split_once('=').ok_or_else(|| format!("{w:?} is not key=value"))?;
        pairs.push((k.to_string(), v.to_string()));
    }
    let mut f = Fields(pairs);
    let op = Op::from_fields(name, &mut f)?;
    match f.0.first() {
        Some((k, _)) => Err(format!("{name} has no field {k}")),
        None => Ok(op),
    }
}

fn print_ops(out: &mut String, ops: &[Op], depth: usize) {
    for op in ops {
        out.push_str(&"    ".repeat(depth));
        out.push_str(&op_line(op));
        out.push('\n');
        if let Op::Fork { ops, .. } = op {
            print_ops(out, ops, depth + 1);
        }
    }
}

/// The operations file of `case`, after the comment lines `comments`.
pub fn print_case(case: &Case, comments: &[String]) -> String {
    let mut out = String::new();
    for c in comments {
        for l in c.lines() {
            out.push_str("# ");
            out.push_str(l);
            out.push('\n');
        }
    }
    out.push_str(&format!("tag {:#x}\n", case.tag));
    print_ops(&mut out, &case.ops, 0);
    out
}

/// Parses lines at indentation `depth` (and their nested ones) from `lines`.
fn parse_ops(
    lines: &mut std::iter::Peekable<impl Iterator<Item = (usize, String)>>,
    depth: usize,
) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    while let Some((no, line)) = lines.peek() {
        let indent = line.len() - line.trim_start().len();
        if indent < 4 * depth {
            break;
        }
        if indent != 4 * depth {
            return Err(format!("line {no}: indented {indent} spaces, expected {}", 4 * depth));
        }
        let no = *no;
        let mut op = parse_line(line.trim()).map_err(|e| format!("line {no}: {e}"))?;
        lines.next();
        if let Op::Fork { ops: kids, .. } = &mut op {
            *kids = parse_ops(lines, depth + 1)?;
        }
        ops.push(op);
    }
    Ok(ops)
}

/// Parses an operations file.
pub fn parse_case(text: &str) -> Result<Case, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end().to_string()))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .peekable();
    let (no, first) = lines.next().ok_or("no tag line")?;
    let tag = first
        .strip_prefix("tag ")
        .and_then(|t| parse_num(t.trim()))
        .and_then(n32)
        .ok_or_else(|| format!("line {no}: expected `tag 0x…`"))?;
    let ops = parse_ops(&mut lines, 0)?;
    if let Some((no, _)) = lines.next() {
        return Err(format!("line {no}: indented past its fork"));
    }
    Ok(Case { tag, ops })
}

#[cfg(test)]
mod tests {
    use super::super::gen::generate;
    use super::*;

    #[test]
    fn generated_cases_round_trip() {
        let mut kinds = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let case = generate(seed, 300);
            let text = print_case(&case, &[format!("seed {seed}")]);
            let back = parse_case(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
            assert_eq!(back, case, "seed {seed}");
            assert_eq!(print_case(&back, &[format!("seed {seed}")]), text);
            fn walk(ops: &[Op], k: &mut std::collections::BTreeSet<&'static str>) {
                for o in ops {
                    k.insert(o.name());
                    if let Op::Fork { ops, .. } = o {
                        walk(ops, k);
                    }
                }
            }
            walk(&case.ops, &mut kinds);
        }
        // Every operation appears, so every printer and parser ran.
        assert_eq!(kinds.len(), Op::NAMES.len(), "{kinds:?}");
    }

    #[test]
    fn hand_written_lines_parse() {
        let text = "# a comment\ntag 0x10\nopen rdonly=1\nfork tag=0x80000001 end=exit-busy\n    child-exit\n    dup file=0 fd=3\nfinish abrupt=0 drain=5 unregister=0\n";
        let case = parse_case(text).unwrap();
        assert_eq!(case.tag, 0x10);
        assert_eq!(case.ops.len(), 3);
        assert_eq!(
            case.ops[1],
            Op::Fork {
                tag: 0x8000_0001,
                end: ChildEnd::ExitBusy,
                ops: vec![Op::ExitNow {}, Op::Dup { file: 0, fd: 3 }]
            }
        );
        assert_eq!(Op::count(&case.ops), 5);
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, want) in [
            ("open rdonly=0\n", "line 1: expected `tag"),
            ("tag 1\nopen rdonly=2\n", "line 2: bad value"),
            ("tag 1\nopen\n", "line 2: missing rdonly="),
            ("tag 1\nopen rdonly=0 x=1\n", "line 2: open has no field x"),
            ("tag 1\nfrobnicate\n", "line 2: unknown operation"),
            ("tag 1\n    open rdonly=0\n", "line 2: indented 4"),
            ("tag 1\nINFO file=0 fd=0 arg=normal:1/v1\n", "line 2: bad value"),
        ] {
            let e = parse_case(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }
}
