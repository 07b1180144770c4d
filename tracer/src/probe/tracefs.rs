//! Parser for tracepoint `format` files under tracefs.
//!
//! Tracepoint record layouts change between kernel versions, so the tracer
//! reads field offsets and sizes from the kernel's own description instead of
//! hard-coding them.

use std::path::{Path, PathBuf};

/// Mount points tried in order; older systems only expose tracefs through debugfs.
const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Errors from reading or querying a tracepoint format.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The format file could not be read.
    #[error(
        "cannot read tracepoint format {}: {source}; tracefs may need mounting \
         (`mount -t tracefs nodev /sys/kernel/tracing`), reading it needs root, \
         and the tracepoint may not exist on this kernel",
        path.display()
    )]
    Io {
        /// File that failed to read.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The tracepoint has no field of that name.
    #[error(
        "tracepoint `{event}` has no field `{field}` on this kernel; its record layout differs from what the tracer expects"
    )]
    NoField {
        /// Tracepoint name.
        event: String,
        /// Field that was looked up.
        field: String,
    },
    /// The text is not a valid format file.
    #[error("malformed tracepoint format at line {line}: {reason}")]
    Malformed {
        /// 1-based line number (0 when the problem is the file as a whole).
        line: usize,
        /// What was wrong.
        reason: String,
    },
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Field name, without any array suffix.
    pub name: String,
    /// Byte offset inside the record.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
    /// Whether the kernel reports the field as signed.
    pub signed: bool,
}

/// A parsed `format` file.
#[derive(Debug, Clone)]
pub struct Format {
    /// Tracepoint name.
    pub name: String,
    /// Tracepoint id, as used by perf_event_open.
    pub id: u32,
    /// Record fields, common fields included, in file order.
    pub fields: Vec<Field>,
    /// The `print fmt:` expression, verbatim.
    pub print_fmt: String,
}

fn malformed(line: usize, reason: impl Into<String>) -> FormatError {
    FormatError::Malformed {
        line,
        reason: reason.into(),
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Extracts the field name from a C declaration such as `const char * uservaddr` or `__u8 saddr[28]`.
fn decl_name(decl: &str) -> Option<&str> {
    let mut decl = decl.trim_end();
    // Strip array suffixes; multi-dimensional ones are possible in principle.
    while let Some(rest) = decl.strip_suffix(']') {
        decl = rest[..rest.rfind('[')?].trim_end();
    }
    let start = decl
        .char_indices()
        .rev()
        .find(|&(_, c)| !is_ident_char(c))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let name = &decl[start..];
    // An identifier cannot start with a digit; a bare type like `int` alone has no name.
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) || start == 0 {
        return None;
    }
    Some(name)
}

fn parse_field(line_no: usize, line: &str) -> Result<Field, FormatError> {
    let mut name = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = None;
    for part in line.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((key, value)) = part.split_once(':') else {
            return Err(malformed(
                line_no,
                format!("expected `key:value`, got `{part}`"),
            ));
        };
        let number = || {
            value
                .trim()
                .parse::<u32>()
                .map_err(|_| malformed(line_no, format!("bad {key} value `{value}`")))
        };
        match key.trim() {
            "field" => {
                name = Some(decl_name(value).ok_or_else(|| {
                    malformed(line_no, format!("no field name in declaration `{value}`"))
                })?);
            }
            "offset" => offset = Some(number()?),
            "size" => size = Some(number()?),
            "signed" => signed = Some(number()? != 0),
            // Unknown attributes are skipped so a future kernel adding one does not break loading.
            _ => {}
        }
    }
    match (name, offset, size) {
        (Some(name), Some(offset), Some(size)) => Ok(Field {
            name: name.to_owned(),
            offset,
            size,
            // Kernels before 2.6.32 omitted `signed:`; unsigned is the safe reading.
            signed: signed.unwrap_or(false),
        }),
        _ => Err(malformed(line_no, "field line lacks field, offset or size")),
    }
}

/// Parses a C integer literal as it appears in print fmt: `12`, `0x1f`, `(-1)`, `1ULL`.
fn parse_int(text: &str) -> Option<i64> {
    let mut text = text.trim();
    while let Some(inner) = text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
        text = inner.trim();
    }
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, text),
    };
    let text = text.trim_end_matches(['u', 'U', 'l', 'L']);
    let magnitude = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()?
    } else if text.len() > 1 && text.starts_with('0') {
        u64::from_str_radix(&text[1..], 8).ok()?
    } else {
        text.parse::<u64>().ok()?
    };
    // Unsigned 64-bit values above i64::MAX keep their bit pattern, like a C cast would.
    let value = magnitude as i64;
    Some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

/// A cursor over print fmt text that understands string literals and nesting.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// Returns the text up to the next `,` or closing bracket at nesting depth 0, not consuming it.
    fn expr(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            match c {
                '(' | '{' | '[' => depth += 1,
                ')' | '}' | ']' if depth == 0 => break,
                ')' | '}' | ']' => depth -= 1,
                ',' if depth == 0 => break,
                '"' => {
                    self.string()?;
                    continue;
                }
                _ => {}
            }
            self.pos += c.len_utf8();
        }
        if depth != 0 {
            return None;
        }
        Some(self.text[start..self.pos].trim())
    }

    /// Consumes a string literal, returning its contents with simple escapes undone.
    fn string(&mut self) -> Option<String> {
        self.skip_ws();
        if self.peek() != Some('"') {
            return None;
        }
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.text[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Some(out);
                }
                '\\' => out.push(chars.next()?.1),
                _ => out.push(c),
            }
        }
        None
    }
}

/// Parses the arguments of one `__print_symbolic(` call after its first argument,
/// i.e. `{ v, "NAME" }, ... )`. Entries whose value is a symbol rather than a
/// number (the kernel leaves some enum names unresolved) are skipped.
fn symbolic_entries(cur: &mut Cursor<'_>) -> Option<Vec<(i64, String)>> {
    let mut out = Vec::new();
    loop {
        if cur.eat(')') {
            return Some(out);
        }
        if !cur.eat(',') {
            return None;
        }
        if !cur.eat('{') {
            return None;
        }
        cur.skip_ws();
        let value = cur.expr()?;
        if !cur.eat(',') {
            return None;
        }
        let name = cur.string()?;
        if !cur.eat('}') {
            return None;
        }
        if let Some(value) = parse_int(value) {
            out.push((value, name));
        }
    }
}

impl Format {
    /// Parses the text of a tracepoint `format` file.
    pub fn parse(text: &str) -> Result<Format, FormatError> {
        let mut name = None;
        let mut id = None;
        let mut fields = Vec::new();
        let mut print_fmt = None;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if let Some(rest) = line.strip_prefix("name:") {
                name = Some(rest.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("ID:") {
                let rest = rest.trim();
                id = Some(
                    rest.parse::<u32>()
                        .map_err(|_| malformed(line_no, format!("bad ID `{rest}`")))?,
                );
            } else if line.starts_with("field:") {
                fields.push(parse_field(line_no, line)?);
            } else if let Some(rest) = line.strip_prefix("print fmt:") {
                print_fmt = Some(rest.trim().to_owned());
            }
            // Other lines (`format:`, blanks, anything a newer kernel adds) are
            // skipped for forward compatibility; the required parts are checked
            // below, which still rejects garbage.
        }
        let name = name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| malformed(0, "no `name:` line"))?;
        let id = id.ok_or_else(|| malformed(0, "no `ID:` line"))?;
        if fields.is_empty() {
            return Err(malformed(0, "no `field:` lines"));
        }
        Ok(Format {
            name,
            id,
            fields,
            print_fmt: print_fmt.unwrap_or_default(),
        })
    }

    /// Reads and parses `events/{category}/{name}/format` from tracefs.
    pub fn load(category: &str, name: &str) -> Result<Format, FormatError> {
        let mut first_err = None;
        for root in TRACEFS_ROOTS {
            let path = Path::new(root)
                .join("events")
                .join(category)
                .join(name)
                .join("format");
            match std::fs::read_to_string(&path) {
                Ok(text) => return Format::parse(&text),
                Err(source) => {
                    // A fallback path that exists but fails (e.g. permissions) says more
                    // than the primary path being absent, so prefer reporting it.
                    let better = match &first_err {
                        None => true,
                        Some(FormatError::Io { source: prev, .. }) => {
                            prev.kind() == std::io::ErrorKind::NotFound
                                && source.kind() != std::io::ErrorKind::NotFound
                        }
                        Some(_) => false,
                    };
                    if better {
                        first_err = Some(FormatError::Io { path, source });
                    }
                }
            }
        }
        Err(first_err.unwrap_or_else(|| malformed(0, "no tracefs mount points configured")))
    }

    /// The field named `name`.
    pub fn field(&self, name: &str) -> Result<&Field, FormatError> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| FormatError::NoField {
                event: self.name.clone(),
                field: name.to_owned(),
            })
    }

    /// Value->name pairs from the first `__print_symbolic(REC-><field>, ...)` in print fmt; empty if none parse.
    pub fn symbols(&self, field: &str) -> Vec<(i64, String)> {
        const CALL: &str = "__print_symbolic(";
        let target = format!("REC->{field}");
        let mut search = 0;
        while let Some(found) = self.print_fmt[search..].find(CALL) {
            let start = search + found + CALL.len();
            search = start;
            let mut cur = Cursor {
                text: &self.print_fmt,
                pos: start,
            };
            cur.skip_ws();
            let Some(arg) = cur.expr() else { continue };
            let mut arg = arg;
            while let Some(inner) = arg.strip_prefix('(').and_then(|a| a.strip_suffix(')')) {
                arg = inner.trim();
            }
            if arg == target {
                return symbolic_entries(&mut cur).unwrap_or_default();
            }
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_ENTER_CONNECT: &str = "name: sys_enter_connect
ID: 2230
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:struct sockaddr * uservaddr;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int addrlen;\toffset:32;\tsize:8;\tsigned:0;

print fmt: \"fd: 0x%08lx, uservaddr: 0x%08lx, addrlen: 0x%08lx\", ((unsigned long)(REC->fd)), ((unsigned long)(REC->uservaddr)), ((unsigned long)(REC->addrlen))
";

    const SYS_EXIT_CONNECT: &str = "name: sys_exit_connect
ID: 2229
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;

print fmt: \"0x%lx\", REC->ret
";

    const TCP_SEND_RESET: &str = "name: tcp_send_reset
ID: 2280
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:60;\tsize:28;\tsigned:0;

print fmt: \"skbaddr=%p skaddr=%p src=%pISpc dest=%pISpc state=%s reason=%s\", REC->skbaddr, REC->skaddr, REC->saddr, REC->daddr, REC->state ? __print_symbolic(REC->state, { TCP_ESTABLISHED, \"TCP_ESTABLISHED\" }, { TCP_SYN_SENT, \"TCP_SYN_SENT\" }, { TCP_SYN_RECV, \"TCP_SYN_RECV\" }, { TCP_FIN_WAIT1, \"TCP_FIN_WAIT1\" }, { TCP_FIN_WAIT2, \"TCP_FIN_WAIT2\" }, { TCP_TIME_WAIT, \"TCP_TIME_WAIT\" }, { TCP_CLOSE, \"TCP_CLOSE\" }, { TCP_CLOSE_WAIT, \"TCP_CLOSE_WAIT\" }, { TCP_LAST_ACK, \"TCP_LAST_ACK\" }, { TCP_LISTEN, \"TCP_LISTEN\" }, { TCP_CLOSING, \"TCP_CLOSING\" }, { TCP_NEW_SYN_RECV, \"TCP_NEW_SYN_RECV\" }) : \"UNKNOWN\", __print_symbolic(REC->reason, { 0, \"NOT_SPECIFIED\" }, { 1, \"NO_SOCKET\" }, { 2, \"TCP_INVALID_ACK_SEQUENCE\" }, { 3, \"TCP_RFC7323_PAWS\" }, { 4, \"TCP_TOO_OLD_ACK\" }, { 5, \"TCP_ACK_UNSENT_DATA\" }, { 6, \"TCP_FLAGS\" }, { 7, \"TCP_OLD_ACK\" }, { 8, \"TCP_ABORT_ON_DATA\" }, { 9, \"TCP_TIMEWAIT_SOCKET\" }, { 10, \"INVALID_SYN\" }, { 11, \"TCP_ABORT_ON_CLOSE\" }, { 12, \"TCP_ABORT_ON_LINGER\" }, { 13, \"TCP_ABORT_ON_MEMORY\" }, { 14, \"TCP_STATE\" }, { 15, \"TCP_KEEPALIVE_TIMEOUT\" }, { 16, \"TCP_DISCONNECT_WITH_DATA\" }, { 17, \"MPTCP_RST_EUNSPEC\" }, { 18, \"MPTCP_RST_EMPTCP\" }, { 19, \"MPTCP_RST_ERESOURCE\" }, { 20, \"MPTCP_RST_EPROHIBIT\" }, { 21, \"MPTCP_RST_EWQ2BIG\" }, { 22, \"MPTCP_RST_EBADPERF\" }, { 23, \"MPTCP_RST_EMIDDLEBOX\" }, { 24, \"ERROR\" }, { 25, \"MAX\" })
";

    fn field(name: &str, offset: u32, size: u32, signed: bool) -> Field {
        Field {
            name: name.to_owned(),
            offset,
            size,
            signed,
        }
    }

    #[test]
    fn parses_sys_enter_connect() {
        let f = Format::parse(SYS_ENTER_CONNECT).unwrap();
        assert_eq!(f.name, "sys_enter_connect");
        assert_eq!(f.id, 2230);
        assert_eq!(f.fields.len(), 8);
        assert_eq!(f.fields[0], field("common_type", 0, 2, false));
        assert_eq!(f.fields[3], field("common_pid", 4, 4, true));
        assert_eq!(
            *f.field("__syscall_nr").unwrap(),
            field("__syscall_nr", 8, 4, true)
        );
        assert_eq!(*f.field("fd").unwrap(), field("fd", 16, 8, false));
        assert_eq!(
            *f.field("uservaddr").unwrap(),
            field("uservaddr", 24, 8, false)
        );
        assert_eq!(*f.field("addrlen").unwrap(), field("addrlen", 32, 8, false));
        assert!(f.print_fmt.starts_with("\"fd: 0x%08lx"));
        assert!(f.print_fmt.ends_with("((unsigned long)(REC->addrlen))"));
        assert!(f.symbols("fd").is_empty());
    }

    #[test]
    fn parses_sys_exit_connect() {
        let f = Format::parse(SYS_EXIT_CONNECT).unwrap();
        assert_eq!(f.name, "sys_exit_connect");
        assert_eq!(f.id, 2229);
        assert_eq!(*f.field("ret").unwrap(), field("ret", 16, 8, true));
        assert_eq!(f.print_fmt, "\"0x%lx\", REC->ret");
    }

    #[test]
    fn parses_tcp_send_reset() {
        let f = Format::parse(TCP_SEND_RESET).unwrap();
        assert_eq!(f.name, "tcp_send_reset");
        assert_eq!(f.id, 2280);
        assert_eq!(*f.field("skaddr").unwrap(), field("skaddr", 16, 8, false));
        assert_eq!(*f.field("state").unwrap(), field("state", 24, 4, true));
        assert_eq!(*f.field("reason").unwrap(), field("reason", 28, 4, false));
        // The `[28]` suffix is not part of the name.
        assert_eq!(*f.field("saddr").unwrap(), field("saddr", 32, 28, false));
        assert_eq!(*f.field("daddr").unwrap(), field("daddr", 60, 28, false));
        let err = f.field("missing").unwrap_err();
        assert!(matches!(err, FormatError::NoField { .. }));
        assert!(err.to_string().contains("tcp_send_reset"), "{err}");
    }

    #[test]
    fn symbols_from_print_fmt() {
        let f = Format::parse(TCP_SEND_RESET).unwrap();
        let reasons = f.symbols("reason");
        assert_eq!(reasons.len(), 26);
        assert_eq!(reasons[0], (0, "NOT_SPECIFIED".to_owned()));
        assert_eq!(reasons[1], (1, "NO_SOCKET".to_owned()));
        assert_eq!(reasons[25], (25, "MAX".to_owned()));
        // The kernel left the state values as unresolved enum names, so none are numeric.
        assert!(f.symbols("state").is_empty());
        assert!(f.symbols("skaddr").is_empty());
        assert!(f.symbols("nonexistent").is_empty());
    }

    #[test]
    fn symbols_literal_forms() {
        let mut f = Format::parse(SYS_EXIT_CONNECT).unwrap();
        f.print_fmt = "\"%s %s\", __print_symbolic(REC->other, { 9, \"NO\" }), \
            __print_symbolic((REC->ret), { (-1), \"MINUS, ONE\" }, { 0x1f, \"HEX\" }, \
            { 1ULL, \"ULL\" }, { 010, \"OCT\" }, { SYM, \"SKIPPED\" }, { 0, \"ESC\\\"APED\" })"
            .to_owned();
        assert_eq!(
            f.symbols("ret"),
            vec![
                (-1, "MINUS, ONE".to_owned()),
                (0x1f, "HEX".to_owned()),
                (1, "ULL".to_owned()),
                (8, "OCT".to_owned()),
                (0, "ESC\"APED".to_owned()),
            ]
        );
        assert_eq!(f.symbols("other"), vec![(9, "NO".to_owned())]);
        // A truncated call yields nothing rather than a partial list or a panic.
        f.print_fmt = "__print_symbolic(REC->ret, { 1, \"A\" }, { 2, \"B".to_owned();
        assert!(f.symbols("ret").is_empty());
    }

    #[test]
    fn decl_names() {
        assert_eq!(decl_name("const char * uservaddr"), Some("uservaddr"));
        assert_eq!(decl_name("__u8 saddr[28]"), Some("saddr"));
        assert_eq!(decl_name("__data_loc char[] name"), Some("name"));
        assert_eq!(decl_name("u32 grid[2][3] "), Some("grid"));
        assert_eq!(decl_name("int *p"), Some("p"));
        assert_eq!(decl_name("int"), None);
        assert_eq!(decl_name(""), None);
        assert_eq!(decl_name("int x[3"), None);
    }

    #[test]
    fn malformed_text_is_an_error() {
        let cases = [
            "",
            "hello world",
            "name: x\nID: 1\n",
            "name: x\nID: one\n\tfield:int a;\toffset:0;\tsize:4;\tsigned:1;\n",
            "ID: 1\n\tfield:int a;\toffset:0;\tsize:4;\tsigned:1;\n",
            "name: x\n\tfield:int a;\toffset:0;\tsize:4;\tsigned:1;\n",
            "name: x\nID: 1\n\tfield:int a;\toffset:zero;\tsize:4;\tsigned:1;\n",
            "name: x\nID: 1\n\tfield:int a;\toffset:0;\tsigned:1;\n",
            "name: x\nID: 1\n\tfield:int;\toffset:0;\tsize:4;\tsigned:1;\n",
            "name: x\nID: 1\n\tfield:int a;\toffset 0;\tsize:4;\n",
            "name: x\nID: 1\n\tfield:int a[;\toffset:0;\tsize:4;\n",
        ];
        for text in cases {
            assert!(
                matches!(Format::parse(text), Err(FormatError::Malformed { .. })),
                "accepted {text:?}"
            );
        }
        // Every prefix of a real file must parse or fail cleanly, never panic.
        for (i, _) in TCP_SEND_RESET.char_indices() {
            if let Ok(f) = Format::parse(&TCP_SEND_RESET[..i]) {
                let _ = f.symbols("reason");
                let _ = f.symbols("state");
            }
        }
    }

    #[test]
    fn load_missing_event_is_io_error() {
        let err = Format::load("no_such_category", "no_such_event").unwrap_err();
        assert!(matches!(err, FormatError::Io { .. }), "{err}");
        assert!(err.to_string().contains("mount -t tracefs"), "{err}");
    }

    #[test]
    fn load_live_files() {
        let events = [
            ("syscalls", "sys_enter_connect"),
            ("syscalls", "sys_exit_connect"),
            ("tcp", "tcp_send_reset"),
        ];
        for (category, name) in events {
            let f = match Format::load(category, name) {
                Ok(f) => f,
                Err(e @ FormatError::Io { .. }) => {
                    eprintln!("skipping live tracefs test: {e}");
                    return;
                }
                Err(e) => panic!("{category}/{name}: {e}"),
            };
            assert_eq!(f.name, name);
            assert!(f.field("common_pid").is_ok());
        }
        let f = Format::load("syscalls", "sys_enter_connect").unwrap();
        assert_eq!(f.field("uservaddr").unwrap().size, 8);
        let f = Format::load("tcp", "tcp_send_reset").unwrap();
        assert!(f.field("reason").is_ok());
        let f = Format::load("sock", "inet_sock_set_state").unwrap();
        assert!(f.symbols("family").contains(&(2, "AF_INET".to_owned())));
        assert!(
            f.symbols("newstate")
                .contains(&(1, "TCP_ESTABLISHED".to_owned()))
        );
        let f = Format::load("skb", "kfree_skb").unwrap();
        let reasons = f.symbols("reason");
        assert!(
            reasons.iter().any(|(_, n)| n == "NETFILTER_DROP"),
            "{reasons:?}"
        );
    }

    #[test]
    fn parses_every_live_format() {
        let Some(events) = TRACEFS_ROOTS
            .iter()
            .find_map(|root| std::fs::read_dir(Path::new(root).join("events")).ok())
        else {
            eprintln!("skipping: tracefs events directory is not readable");
            return;
        };
        let mut parsed = 0;
        for category in events.flatten() {
            let Ok(entries) = std::fs::read_dir(category.path()) else {
                continue;
            };
            for event in entries.flatten() {
                let Ok(text) = std::fs::read_to_string(event.path().join("format")) else {
                    continue;
                };
                let f = Format::parse(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", event.path().display()));
                for field in &f.fields {
                    let _ = f.symbols(&field.name);
                }
                parsed += 1;
            }
        }
        eprintln!("parsed {parsed} live format files");
    }
}
