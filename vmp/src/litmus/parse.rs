//! Parser for the litmus subset documented in [`super`]. Every error names its line.

use std::collections::BTreeSet;

use super::{Condition, Instr, Litmus, Observable, Operand, Prop, Quantifier, Reg, NREGS};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

fn err<T>(line: usize, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        msg: msg.into(),
    })
}

/// Most processors a test may have (an outcome search beyond this is hopeless anyway).
pub const MAX_THREADS: usize = 8;
/// Most instructions per processor.
pub const MAX_INSTRS: usize = 64;

/// Replaces `(* ... *)` and `// ...` comments by spaces, keeping line breaks.
fn strip_comments(src: &str) -> Result<String, ParseError> {
    let mut out = String::with_capacity(src.len());
    let (mut line, mut open_line) = (1, 0);
    let mut chars = src.chars().peekable();
    let mut depth = 0usize;
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
            out.push('\n');
            continue;
        }
        if c == '(' && chars.peek() == Some(&'*') {
            chars.next();
            if depth == 0 {
                open_line = line;
            }
            depth += 1;
            out.push_str("  ");
        } else if depth > 0 && c == '*' && chars.peek() == Some(&')') {
            chars.next();
            depth -= 1;
            out.push_str("  ");
        } else if depth == 0 && c == '/' && chars.peek() == Some(&'/') {
            while chars.peek().is_some_and(|&c| c != '\n') {
                chars.next();
            }
        } else {
            out.push(if depth > 0 { ' ' } else { c });
        }
    }
    if depth > 0 {
        return err(open_line, "unterminated comment `(*`");
    }
    Ok(out)
}

fn parse_value(s: &str, line: usize) -> Result<u32, ParseError> {
    let t = s.trim();
    let t = t.strip_prefix('$').unwrap_or(t);
    let r = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u32::from_str_radix(h, 16)
    } else if let Some(n) = t.strip_prefix('-') {
        n.parse::<u32>().map(|v| v.wrapping_neg())
    } else {
        t.parse::<u32>()
    };
    r.or_else(|_| {
        err(
            line,
            format!("expected a 32-bit integer, found `{}`", s.trim()),
        )
    })
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn location_name(s: &str, line: usize) -> Result<String, ParseError> {
    let t = s.trim();
    if !is_ident(t) || Reg::from_name(t).is_some() {
        return err(line, format!("expected a location name, found `{t}`"));
    }
    Ok(t.to_string())
}

/// `N:REG` or a location name (optionally `[name]`).
fn parse_observable(s: &str, line: usize, ncpu: usize) -> Result<Observable, ParseError> {
    let t = s.trim();
    if let Some((cpu, reg)) = t.split_once(':') {
        let cpu: usize = cpu
            .trim()
            .parse()
            .or_else(|_| err(line, format!("expected a processor number in `{t}`")))?;
        if cpu >= ncpu {
            return err(line, format!("processor {cpu} does not exist in `{t}`"));
        }
        let reg = Reg::from_name(reg.trim())
            .ok_or(())
            .or_else(|_| err(line, format!("unknown register in `{t}`")))?;
        return Ok(Observable::Reg { cpu, reg });
    }
    let inner = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(t);
    Ok(Observable::Mem(location_name(inner, line)?))
}

/// A parsed operand before locations get their indices.
enum Opnd {
    Mem(String),
    Reg(Reg),
    Imm(u32),
}

fn parse_operand(s: &str, line: usize) -> Result<Opnd, ParseError> {
    let t = s.trim();
    if let Some(inner) = t.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or(())
            .or_else(|_| err(line, format!("missing `]` in `{t}`")))?;
        return Ok(Opnd::Mem(location_name(inner, line)?));
    }
    if let Some(r) = Reg::from_name(t) {
        return Ok(Opnd::Reg(r));
    }
    if t.starts_with('$') || t.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        return Ok(Opnd::Imm(parse_value(t, line)?));
    }
    err(
        line,
        format!("unsupported operand `{t}` (use [loc], a register or $value)"),
    )
}

/// One instruction cell; locations are interned through `loc`.
fn parse_instr(
    cell: &str,
    line: usize,
    loc: &mut impl FnMut(String) -> usize,
) -> Result<Instr, ParseError> {
    let text = cell.trim();
    let (mnem, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let mut mnem = mnem.to_ascii_uppercase();
    let mut rest = rest.trim();
    if mnem == "LOCK" {
        let (m, r) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        mnem = format!("LOCK {}", m.to_ascii_uppercase());
        rest = r.trim();
    }
    let ops: Vec<Opnd> = if rest.is_empty() {
        vec![]
    } else {
        rest.split(',')
            .map(|o| parse_operand(o, line))
            .collect::<Result<_, _>>()?
    };
    let bad = || err(line, format!("unsupported instruction `{text}`"));
    let i = match (mnem.as_str(), ops.as_slice()) {
        ("MFENCE", []) => Instr::Mfence,
        ("MOV", [Opnd::Mem(m), Opnd::Imm(v)]) => Instr::Store {
            loc: loc(m.clone()),
            src: Operand::Imm(*v),
        },
        ("MOV", [Opnd::Mem(m), Opnd::Reg(r)]) => Instr::Store {
            loc: loc(m.clone()),
            src: Operand::Reg(*r),
        },
        ("MOV", [Opnd::Reg(r), Opnd::Mem(m)]) => Instr::Load {
            dst: *r,
            loc: loc(m.clone()),
        },
        ("MOV", [Opnd::Reg(d), Opnd::Imm(v)]) => Instr::Mov {
            dst: *d,
            src: Operand::Imm(*v),
        },
        ("MOV", [Opnd::Reg(d), Opnd::Reg(s)]) => Instr::Mov {
            dst: *d,
            src: Operand::Reg(*s),
        },
        ("XCHG" | "LOCK XCHG", [Opnd::Mem(m), Opnd::Reg(r)] | [Opnd::Reg(r), Opnd::Mem(m)]) => {
            Instr::Xchg {
                loc: loc(m.clone()),
                reg: *r,
            }
        }
        ("LOCK ADD", [Opnd::Mem(m), Opnd::Imm(v)]) => Instr::LockAdd {
            loc: loc(m.clone()),
            src: Operand::Imm(*v),
        },
        ("LOCK ADD", [Opnd::Mem(m), Opnd::Reg(r)]) => Instr::LockAdd {
            loc: loc(m.clone()),
            src: Operand::Reg(*r),
        },
        ("LOCK INC", [Opnd::Mem(m)]) => Instr::LockInc {
            loc: loc(m.clone()),
        },
        ("LOCK XADD", [Opnd::Mem(m), Opnd::Reg(r)]) => Instr::LockXadd {
            loc: loc(m.clone()),
            reg: *r,
        },
        ("LOCK CMPXCHG", [Opnd::Mem(m), Opnd::Reg(r)]) => Instr::LockCmpxchg {
            loc: loc(m.clone()),
            reg: *r,
        },
        _ => return bad(),
    };
    Ok(i)
}

/// Tokens of a condition, each with its line.
fn tokenize(lines: &[(usize, &str)]) -> Result<Vec<(usize, String)>, ParseError> {
    let mut toks = Vec::new();
    for &(ln, text) in lines {
        let mut chars = text.chars().peekable();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
            } else if c == '/' || c == '\\' {
                chars.next();
                let pair = match (c, chars.next()) {
                    ('/', Some('\\')) => "/\\",
                    ('\\', Some('/')) => "\\/",
                    _ => return err(ln, "expected `/\\` or `\\/` in the condition"),
                };
                toks.push((ln, pair.to_string()));
            } else if "()=~".contains(c) {
                chars.next();
                toks.push((ln, c.to_string()));
            } else if c.is_ascii_alphanumeric() || "_:[]$-".contains(c) {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || "_:[]$-".contains(c) {
                        w.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                toks.push((ln, w));
            } else {
                return err(ln, format!("unexpected character `{c}` in the condition"));
            }
        }
    }
    Ok(toks)
}

struct CondParser<'a> {
    toks: &'a [(usize, String)],
    pos: usize,
    last_line: usize,
    ncpu: usize,
}

impl CondParser<'_> {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(|(_, t)| t.as_str())
    }
    fn line(&self) -> usize {
        self.toks.get(self.pos).map_or(self.last_line, |(l, _)| *l)
    }
    fn next(&mut self) -> Result<String, ParseError> {
        let t = self.toks.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t.ok_or(())
            .or_else(|_| err(self.last_line, "condition ends too early"))
    }
    fn expect(&mut self, want: &str) -> Result<(), ParseError> {
        let line = self.line();
        let got = self.next()?;
        if got != want {
            return err(line, format!("expected `{want}`, found `{got}`"));
        }
        Ok(())
    }
    fn or(&mut self) -> Result<Prop, ParseError> {
        let mut p = self.and()?;
        while self.peek() == Some("\\/") {
            self.pos += 1;
            p = Prop::Or(Box::new(p), Box::new(self.and()?));
        }
        Ok(p)
    }
    fn and(&mut self) -> Result<Prop, ParseError> {
        let mut p = self.unary()?;
        while self.peek() == Some("/\\") {
            self.pos += 1;
            p = Prop::And(Box::new(p), Box::new(self.unary()?));
        }
        Ok(p)
    }
    fn unary(&mut self) -> Result<Prop, ParseError> {
        let line = self.line();
        match self.peek() {
            Some("~") => {
                self.pos += 1;
                Ok(Prop::Not(Box::new(self.unary()?)))
            }
            Some("(") => {
                self.pos += 1;
                let p = self.or()?;
                self.expect(")")?;
                Ok(p)
            }
            Some("true") => {
                self.pos += 1;
                Ok(Prop::True)
            }
            Some("false") => {
                self.pos += 1;
                Ok(Prop::Not(Box::new(Prop::True)))
            }
            _ => {
                let lhs = self.next()?;
                let obs = parse_observable(&lhs, line, self.ncpu)?;
                self.expect("=")?;
                let line = self.line();
                let v = parse_value(&self.next()?, line)?;
                Ok(Prop::Eq(obs, v))
            }
        }
    }
}

fn parse_condition(lines: &[(usize, &str)], ncpu: usize) -> Result<Condition, ParseError> {
    let toks = tokenize(lines)?;
    let last_line = lines.last().map_or(0, |l| l.0);
    let mut p = CondParser {
        toks: &toks,
        pos: 0,
        last_line,
        ncpu,
    };
    let line = p.line();
    let quantifier = match p.next()?.as_str() {
        "exists" => Quantifier::Exists,
        "forall" => Quantifier::Forall,
        "~" if p.peek() == Some("exists") => {
            p.pos += 1;
            Quantifier::NotExists
        }
        other => {
            return err(
                line,
                format!("expected exists, ~exists or forall, found `{other}`"),
            )
        }
    };
    let prop = p.or()?;
    if let Some(t) = p.peek() {
        let line = p.line();
        return err(line, format!("unexpected `{t}` after the condition"));
    }
    Ok(Condition { quantifier, prop })
}

/// Parses a litmus test in the documented subset of herd's x86 syntax.
pub fn parse(src: &str) -> Result<Litmus, ParseError> {
    let clean = strip_comments(src)?;
    let lines: Vec<(usize, &str)> = clean
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let mut it = lines.iter().copied().peekable();
    let Some((ln, head)) = it.next() else {
        return err(1, "empty litmus file");
    };
    let mut words = head.split_whitespace();
    if !words.next().is_some_and(|a| a.eq_ignore_ascii_case("x86")) {
        return err(ln, "expected `X86 <name>` (only x86 tests are supported)");
    }
    let name = words.collect::<Vec<_>>().join(" ");
    if name.is_empty() {
        return err(ln, "the test has no name after `X86`");
    }
    // Optional lines before the initial state.
    while let Some(&(ln, l)) = it.peek() {
        if l.starts_with('{') {
            break;
        }
        if !(l.starts_with('"') || l.contains('=')) {
            return err(
                ln,
                format!("expected the initial state `{{ ... }}`, found `{l}`"),
            );
        }
        it.next();
    }
    // Initial state, possibly over several lines.
    let Some((init_line, _)) = it.peek().copied() else {
        return err(ln, "missing initial state `{ ... }`");
    };
    let mut init_text = Vec::new();
    loop {
        let Some((ln, l)) = it.next() else {
            return err(init_line, "initial state `{` is never closed");
        };
        let l = if ln == init_line { &l[1..] } else { l };
        if let Some((inside, after)) = l.split_once('}') {
            if !after.trim().is_empty() {
                return err(ln, format!("unexpected `{}` after `}}`", after.trim()));
            }
            init_text.push((ln, inside));
            break;
        }
        init_text.push((ln, l));
    }
    // Thread header.
    let Some((hln, header)) = it.next() else {
        return err(init_line, "missing the processor header `P0 | P1 ... ;`");
    };
    let Some(header) = header.strip_suffix(';') else {
        return err(hln, "the processor header must end with `;`");
    };
    let names: Vec<&str> = header.split('|').map(str::trim).collect();
    for (i, n) in names.iter().enumerate() {
        if !n.eq_ignore_ascii_case(&format!("P{i}")) {
            return err(hln, format!("expected processor `P{i}`, found `{n}`"));
        }
    }
    let ncpu = names.len();
    if ncpu > MAX_THREADS {
        return err(
            hln,
            format!("at most {MAX_THREADS} processors are supported"),
        );
    }
    let mut locs: BTreeSet<String> = BTreeSet::new();
    // Instruction rows: parsed after all locations are known (locations are sorted by name).
    let mut rows: Vec<(usize, Vec<&str>)> = Vec::new();
    while let Some(&(ln, l)) = it.peek() {
        let lower = l.to_ascii_lowercase();
        if ["exists", "~", "forall", "locations"]
            .iter()
            .any(|k| lower.starts_with(k))
        {
            break;
        }
        it.next();
        let Some(row) = l.strip_suffix(';') else {
            return err(
                ln,
                "expected an instruction row ending with `;` or a condition (exists, ~exists, forall)",
            );
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if cells.len() != ncpu {
            return err(
                ln,
                format!("row has {} columns, the header {ncpu}", cells.len()),
            );
        }
        rows.push((ln, cells));
    }
    if rows.len() > MAX_INSTRS {
        return err(
            hln,
            format!("at most {MAX_INSTRS} instruction rows are supported"),
        );
    }
    // First pass over the instructions: collect location names.
    for (ln, cells) in &rows {
        for c in cells.iter().filter(|c| !c.is_empty()) {
            parse_instr(c, *ln, &mut |n| {
                locs.insert(n);
                0
            })?;
        }
    }
    let mut extra_observed = Vec::new();
    if let Some(&(ln, l)) = it.peek() {
        if l.to_ascii_lowercase().starts_with("locations") {
            it.next();
            let body = l["locations".len()..].trim();
            let Some(body) = body.strip_prefix('[').and_then(|b| b.strip_suffix(']')) else {
                return err(ln, "expected `locations [a; b; ...]`");
            };
            for item in body.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                extra_observed.push(parse_observable(item, ln, ncpu)?);
            }
        }
    }
    let cond_lines: Vec<(usize, &str)> = it.collect();
    let condition = if cond_lines.is_empty() {
        None
    } else {
        Some(parse_condition(&cond_lines, ncpu)?)
    };
    // Initial values.
    let mut inits: Vec<(usize, Observable, u32)> = Vec::new();
    for (ln, text) in &init_text {
        for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((lhs, rhs)) = item.split_once('=') else {
                return err(
                    *ln,
                    format!("expected `name=value` in the initial state, found `{item}`"),
                );
            };
            let obs = parse_observable(lhs, *ln, ncpu)?;
            inits.push((*ln, obs, parse_value(rhs, *ln)?));
        }
    }
    let mentioned = inits
        .iter()
        .map(|(_, o, _)| o)
        .chain(&extra_observed)
        .cloned()
        .collect::<Vec<_>>();
    for o in &mentioned {
        if let Observable::Mem(n) = o {
            locs.insert(n.clone());
        }
    }
    if let Some(c) = &condition {
        let mut s = BTreeSet::new();
        c.prop.observables(&mut s);
        for o in s {
            if let Observable::Mem(n) = o {
                locs.insert(n);
            }
        }
    }
    let locations: Vec<String> = locs.into_iter().collect();
    let index = |n: &str| locations.iter().position(|l| l == n).unwrap_or(0);
    let mut init_mem = vec![0u32; locations.len()];
    let mut init_regs = vec![[0u32; NREGS]; ncpu];
    for (_, o, v) in &inits {
        match o {
            Observable::Mem(n) => init_mem[index(n)] = *v,
            Observable::Reg { cpu, reg } => init_regs[*cpu][reg.index()] = *v,
        }
    }
    let mut threads = vec![Vec::new(); ncpu];
    for (ln, cells) in &rows {
        for (cpu, c) in cells.iter().enumerate() {
            if !c.is_empty() {
                threads[cpu].push(parse_instr(c, *ln, &mut |n| index(&n))?);
            }
        }
    }
    let mut t = Litmus {
        name,
        locations,
        init_mem,
        init_regs,
        threads,
        condition,
        observed: vec![],
    };
    t.set_observed(extra_observed);
    Ok(t)
}
