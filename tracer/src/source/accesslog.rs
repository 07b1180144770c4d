//! Parses proxy access-log lines (nginx, HAProxy, Envoy) into the few fields that explain an
//! error response: status, upstreams tried, upstream timers and the proxy's own termination
//! codes. Request lines, paths, referers and user agents are stepped over, never stored: the
//! tracer keeps no payload.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// An access-log dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// nginx `combined` (or `main`), optionally followed by the upstream variables.
    Nginx,
    /// HAProxy `option httplog`, optionally behind a syslog header.
    Haproxy,
    /// Envoy's default access-log format.
    Envoy,
}

impl LogFormat {
    /// The format's name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Nginx => "nginx",
            LogFormat::Haproxy => "haproxy",
            LogFormat::Envoy => "envoy",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [LogFormat::Nginx, LogFormat::Haproxy, LogFormat::Envoy]
            .into_iter()
            .find(|format| format.name().eq_ignore_ascii_case(name))
    }
}

/// A log file to follow and the dialect it is written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpec {
    /// The log file.
    pub path: PathBuf,
    /// How its lines are laid out.
    pub format: LogFormat,
}

impl LogSpec {
    /// Parses `PATH[:FORMAT]` (format nginx, haproxy or envoy; nginx when absent).
    pub fn parse(s: &str) -> Result<LogSpec, String> {
        if s.is_empty() {
            return Err("empty access-log path".to_string());
        }
        // Only the last ':' can start a format, so directories and file names may contain ':'.
        let Some((path, suffix)) = s.rsplit_once(':') else {
            return Ok(LogSpec {
                path: PathBuf::from(s),
                format: LogFormat::Nginx,
            });
        };
        if let Some(format) = LogFormat::from_name(suffix) {
            if path.is_empty() {
                return Err(format!("access-log spec `{s}` has no path"));
            }
            return Ok(LogSpec {
                path: PathBuf::from(path),
                format,
            });
        }
        // A suffix with a '/' is part of a path (`/srv/a:b/access.log`). One without cannot be
        // told apart from a misspelt format, and silently reading `x.log:apache` as a file that
        // never appears would be worse than asking for `x.log:apache:nginx`.
        if suffix.contains('/') {
            Ok(LogSpec {
                path: PathBuf::from(s),
                format: LogFormat::Nginx,
            })
        } else {
            Err(format!(
                "unknown access-log format `{suffix}` (nginx, haproxy or envoy)"
            ))
        }
    }
}

/// What one access-log line says about a response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogEntry {
    /// The status the proxy sent to its client (Envoy logs 0 when none was sent).
    pub status: u16,
    /// The client's address, when the format logs it.
    pub client_ip: Option<IpAddr>,
    /// The client's port, when the format logs it (HAProxy does, nginx `combined` does not).
    pub client_port: Option<u16>,
    /// Upstreams tried, in order (nginx `$upstream_addr` may list several: "a:1, b:2" or groups separated by " : "); HAProxy: server address if present else backend/server name.
    pub upstreams: Vec<String>,
    /// Status of each upstream attempt as logged (nginx `$upstream_status`; may contain "-").
    pub upstream_statuses: Vec<String>,
    /// Connect time of the last upstream attempt, seconds.
    pub upstream_connect_time_s: Option<f64>,
    /// Response time of the last upstream attempt, seconds.
    pub upstream_response_time_s: Option<f64>,
    /// HAProxy termination state, e.g. "SC--".
    pub termination_state: Option<String>,
    /// Envoy response flags, e.g. "UF,URX".
    pub response_flags: Option<String>,
    /// Retries: HAProxy's retries field; nginx: upstreams.len()-1 when upstreams are known.
    pub retries: Option<u32>,
    /// Wall-clock time of the request as Unix seconds (f64) when the line has a parseable timestamp.
    pub time_unix_s: Option<f64>,
}

/// Why a line could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// The line is empty or blank.
    #[error("empty line")]
    Empty,
    /// A quoted string or `[...]` group runs to the end of the line.
    #[error("unterminated {0}")]
    Unterminated(&'static str),
    /// The line ends before the named field.
    #[error("no {0} field")]
    MissingField(&'static str),
    /// The named field does not have the format's shape.
    #[error("{field} field is not {expected}")]
    Malformed {
        /// The field.
        field: &'static str,
        /// What it should look like.
        expected: &'static str,
    },
    /// A numeric field holds something else.
    #[error("{field} `{value}` is not a number")]
    NotANumber {
        /// The field.
        field: &'static str,
        /// The start of what it holds.
        value: String,
    },
    /// No `client:port [date]` pair, where an HAProxy httplog line starts.
    #[error("no `client:port [accept date]` fields (not an HAProxy httplog line)")]
    NotHaproxy,
}

/// Parses one line (without its newline) written in `format`.
pub fn parse_line(format: LogFormat, line: &str) -> Result<LogEntry, ParseError> {
    if line.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    match format {
        LogFormat::Nginx => parse_nginx(line),
        LogFormat::Haproxy => parse_haproxy(line),
        LogFormat::Envoy => parse_envoy(line),
    }
}

/// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
/// "$http_referer" "$http_user_agent"`, then optionally more quoted fields (`main` adds
/// `"$http_x_forwarded_for"`) and `$upstream_addr $upstream_status $upstream_connect_time
/// $upstream_response_time`.
fn parse_nginx(line: &str) -> Result<LogEntry, ParseError> {
    let mut cur = Cursor::new(line);
    let addr = cur.field("remote address")?;
    cur.field("ident")?;
    cur.field("remote user")?;
    let time = cur.bracketed("local time")?;
    cur.quoted("request")?;
    let status = parse_status(cur.field("status")?.text)?;
    cur.field("body bytes")?;
    cur.quoted("referer")?;
    cur.quoted("user agent")?;
    while cur.rest().starts_with('"') {
        cur.quoted("extra quoted")?;
    }

    let (client_ip, client_port) = client_address(addr.text);
    let mut entry = LogEntry {
        status,
        client_ip,
        client_port,
        time_unix_s: bracket_inner(time.text).and_then(parse_clf_time),
        ..LogEntry::default()
    };
    let mut fields = upstream_fields(cur.rest()).into_iter();
    entry.upstreams = list_field(fields.next());
    entry.upstream_statuses = list_field(fields.next());
    // The last attempt is the one whose outcome the client got.
    entry.upstream_connect_time_s = last_seconds(fields.next());
    entry.upstream_response_time_s = last_seconds(fields.next());
    if !entry.upstreams.is_empty() {
        entry.retries = u32::try_from(entry.upstreams.len() - 1).ok();
    }
    Ok(entry)
}

/// Groups the words of nginx's upstream variables into fields. A variable is a list when
/// several servers were tried: "a, b" within an upstream group, "a : b" across internal
/// redirects. Both kinds of separator continue the current field.
fn upstream_fields(rest: &str) -> Vec<Vec<&str>> {
    let mut fields: Vec<Vec<&str>> = Vec::new();
    let mut continues = false;
    for word in rest.split_ascii_whitespace() {
        if word == ":" || word == "," {
            continues = true;
            continue;
        }
        let (item, comma) = match word.strip_suffix(',') {
            Some(item) => (item, true),
            None => (word, false),
        };
        match fields.last_mut() {
            Some(last) if continues => last.push(item),
            _ => fields.push(vec![item]),
        }
        continues = comma;
    }
    fields
}

/// A list-valued field; a lone "-" means the variable was empty.
fn list_field(items: Option<Vec<&str>>) -> Vec<String> {
    match items {
        Some(items) if items != ["-"] => items.into_iter().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

fn last_seconds(items: Option<Vec<&str>>) -> Option<f64> {
    parse_seconds(items?.last()?)
}

/// `client:port [accept date] frontend backend/server Tq/Tw/Tc/Tr/Tt status bytes
/// req_cookie resp_cookie termination actconn/feconn/beconn/srv_conn/retries
/// srv_queue/backend_queue ["request"]`, possibly after a syslog header.
fn parse_haproxy(line: &str) -> Result<LogEntry, ParseError> {
    let mut cur = Cursor::new(line);
    // The syslog header (if any) has no fixed shape, so look for where httplog starts: a
    // client address followed by a `[dd/Mon/yyyy:...]` accept date. Requiring the address
    // keeps an nginx line (`... - [date]`) from passing for HAProxy's.
    let mut previous: Option<Token> = None;
    let (client, date) = loop {
        let token = cur.next_token()?.ok_or(ParseError::NotHaproxy)?;
        if let Some(client) = previous.filter(|p| is_haproxy_client(p) && is_clf_date(&token)) {
            break (client, token);
        }
        previous = Some(token);
    };
    cur.field("frontend")?;
    let server = cur.field("backend/server")?;
    if server.kind != Kind::Bare || !server.text.contains('/') {
        return Err(ParseError::Malformed {
            field: "backend/server",
            expected: "`backend/server`",
        });
    }
    let timers = cur.field("timers")?;
    let status = parse_status(cur.field("status")?.text)?;
    cur.field("bytes read")?;
    cur.field("captured request cookie")?;
    cur.field("captured response cookie")?;
    let termination = cur.field("termination state")?;
    let counts = cur.field("connection counts")?;
    // Everything after (queues, captured headers, the request) is not needed, and HAProxy
    // truncates long lines inside the request, so stop reading here.

    let timers: Vec<&str> = timers.text.split('/').collect();
    let [_, _, connect, response, ..] = timers[..] else {
        return Err(ParseError::Malformed {
            field: "timers",
            expected: "`Tq/Tw/Tc/Tr/Tt`",
        });
    };
    let counts: Vec<&str> = counts.text.split('/').collect();
    let [_, _, _, _, retries] = counts[..] else {
        return Err(ParseError::Malformed {
            field: "connection counts",
            expected: "`actconn/feconn/beconn/srv_conn/retries`",
        });
    };
    // '+' marks a redispatch to another server after the retries.
    let retries = retries.strip_prefix('+').unwrap_or(retries);
    let retries = retries
        .parse::<u32>()
        .map_err(|_| not_a_number("retries", retries))?;

    let (client_ip, client_port) = client_address(client.text);
    Ok(LogEntry {
        status,
        client_ip,
        client_port,
        upstreams: vec![server.text.to_string()],
        upstream_connect_time_s: haproxy_timer(connect)?,
        upstream_response_time_s: haproxy_timer(response)?,
        termination_state: Some(termination.text.to_string()),
        retries: Some(retries),
        time_unix_s: bracket_inner(date.text).and_then(parse_clf_time),
        ..LogEntry::default()
    })
}

/// A timer in milliseconds; -1 means the step never happened, '+' marks `option logasap`.
fn haproxy_timer(text: &str) -> Result<Option<f64>, ParseError> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    let ms = digits
        .parse::<i64>()
        .map_err(|_| not_a_number("timer", text))?;
    Ok((ms >= 0).then(|| ms as f64 / 1000.0))
}

/// `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
/// %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
/// %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
/// "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"`.
fn parse_envoy(line: &str) -> Result<LogEntry, ParseError> {
    let mut cur = Cursor::new(line);
    let time = cur.bracketed("start time")?;
    cur.quoted("request")?;
    let status = parse_status(cur.field("response code")?.text)?;
    let flags = cur.field("response flags")?;
    cur.field("bytes received")?;
    cur.field("bytes sent")?;
    cur.field("duration")?;
    let service_time = cur.field("upstream service time")?;
    cur.quoted("x-forwarded-for")?;
    cur.quoted("user agent")?;
    cur.quoted("request id")?;
    cur.quoted("authority")?;
    let upstream = cur.quoted("upstream host")?;

    let service_time_s = match present(service_time.text) {
        None => None,
        Some(ms) => Some(
            ms.parse::<u64>()
                .map_err(|_| not_a_number("upstream service time", ms))? as f64
                / 1000.0,
        ),
    };
    Ok(LogEntry {
        status,
        upstreams: present(upstream.text)
            .map(|host| vec![host.to_string()])
            .unwrap_or_default(),
        upstream_response_time_s: service_time_s,
        response_flags: present(flags.text).map(str::to_string),
        time_unix_s: bracket_inner(time.text).and_then(parse_rfc3339),
        ..LogEntry::default()
    })
}

/// `-` is how all three proxies write an absent value.
fn present(text: &str) -> Option<&str> {
    (text != "-" && !text.is_empty()).then_some(text)
}

fn parse_status(text: &str) -> Result<u16, ParseError> {
    // `u16::from_str` would also take "+502".
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_a_number("status", text));
    }
    text.parse().map_err(|_| not_a_number("status", text))
}

/// A duration in seconds as nginx writes it ("0.001"); "-" and nonsense are absent.
fn parse_seconds(text: &str) -> Option<f64> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
}

fn not_a_number(field: &'static str, value: &str) -> ParseError {
    // Only the start of the value: the error may be logged, and a misparsed line could put
    // anything (a path, a user agent) into the field.
    const SHOWN: usize = 24;
    let value = match value.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_string(),
    };
    ParseError::NotANumber { field, value }
}

/// `ip:port`, `[ipv6]:port` or a bare address; anything else (a unix socket) is unknown.
fn client_address(text: &str) -> (Option<IpAddr>, Option<u16>) {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return (Some(addr.ip()), Some(addr.port()));
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    (bare.parse().ok(), None)
}

/// How a token was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Up to the next whitespace.
    Bare,
    /// Between double quotes; `text` is the raw inside, escapes kept.
    Quoted,
    /// Starts with `[`, runs to the next `]` and on to the next whitespace, so that both
    /// `[24/Nov/2026:12:47:56 +0000]` and `[::1]:5000` are one token.
    Bracketed,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
}

/// Splits a line into whitespace-separated tokens, keeping quoted strings and bracketed groups
/// (which contain spaces) whole.
struct Cursor<'a> {
    line: &'a str,
    /// Byte offset of the next unread byte; always on a char boundary because it only stops at
    /// ASCII bytes or the end.
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(line: &'a str) -> Self {
        Cursor { line, pos: 0 }
    }

    fn skip_space(&mut self) {
        let bytes = self.line.as_bytes();
        while bytes.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    /// The unread rest of the line, without leading whitespace.
    fn rest(&mut self) -> &'a str {
        self.skip_space();
        self.line.get(self.pos..).unwrap_or("")
    }

    fn next_token(&mut self) -> Result<Option<Token<'a>>, ParseError> {
        self.skip_space();
        let bytes = self.line.as_bytes();
        let start = self.pos;
        let (kind, text, end) = match bytes.get(start) {
            None => return Ok(None),
            Some(b'"') => {
                let mut i = start + 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(ParseError::Unterminated("quoted string")),
                        // An escaped character never ends the string; escapes are kept as-is
                        // because quoted fields are only stepped over or compared to "-".
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                (Kind::Quoted, &self.line[start + 1..i], i + 1)
            }
            Some(b'[') => {
                let close = bytes[start..]
                    .iter()
                    .position(|&b| b == b']')
                    .ok_or(ParseError::Unterminated("`[`"))?;
                let end = self.bare_end(start + close + 1);
                (Kind::Bracketed, &self.line[start..end], end)
            }
            Some(_) => {
                let end = self.bare_end(start);
                (Kind::Bare, &self.line[start..end], end)
            }
        };
        self.pos = end;
        Ok(Some(Token { kind, text }))
    }

    fn bare_end(&self, from: usize) -> usize {
        let bytes = self.line.as_bytes();
        let mut end = from;
        while bytes.get(end).is_some_and(|b| !b.is_ascii_whitespace()) {
            end += 1;
        }
        end
    }

    fn field(&mut self, name: &'static str) -> Result<Token<'a>, ParseError> {
        self.next_token()?.ok_or(ParseError::MissingField(name))
    }

    fn quoted(&mut self, name: &'static str) -> Result<Token<'a>, ParseError> {
        self.of_kind(name, Kind::Quoted, "a quoted string")
    }

    fn bracketed(&mut self, name: &'static str) -> Result<Token<'a>, ParseError> {
        self.of_kind(name, Kind::Bracketed, "in brackets")
    }

    fn of_kind(
        &mut self,
        name: &'static str,
        kind: Kind,
        expected: &'static str,
    ) -> Result<Token<'a>, ParseError> {
        let token = self.field(name)?;
        if token.kind == kind {
            Ok(token)
        } else {
            Err(ParseError::Malformed {
                field: name,
                expected,
            })
        }
    }
}

fn bracket_inner(text: &str) -> Option<&str> {
    text.strip_prefix('[')?.strip_suffix(']')
}

/// `ip:port`, `[ipv6]:port`, or `unix:N` for a client on a unix socket.
fn is_haproxy_client(token: &Token) -> bool {
    token.text.parse::<SocketAddr>().is_ok() || token.text.starts_with("unix:")
}

/// `[dd/Mon/yyyy:...]`, the shape of nginx's and HAProxy's dates.
fn is_clf_date(token: &Token) -> bool {
    token.kind == Kind::Bracketed
        && bracket_inner(token.text).is_some_and(|inner| {
            let b = inner.as_bytes();
            b.len() > 3 && b[0].is_ascii_digit() && b[1].is_ascii_digit() && b[2] == b'/'
        })
}

/// A calendar date and time of day, as written in a log.
#[derive(Debug, Clone, Copy)]
struct Civil {
    year: i32,
    month: i32,
    day: i32,
    hour: i32,
    minute: i32,
    second: i32,
    /// Fraction of a second, in [0, 1).
    frac: f64,
}

impl Civil {
    fn is_valid(&self) -> bool {
        (1..=12).contains(&self.month)
            && (1..=days_in_month(self.year, self.month)).contains(&self.day)
            && (0..24).contains(&self.hour)
            && (0..60).contains(&self.minute)
            // 60 is a leap second.
            && (0..=60).contains(&self.second)
    }

    /// Seconds since the Unix epoch, reading the time as UTC.
    fn utc_seconds(&self) -> f64 {
        let days = days_from_civil(self.year, self.month, self.day);
        let seconds = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        seconds as f64 + self.frac
    }

    /// Seconds since the Unix epoch, reading the time in this host's time zone.
    fn local_seconds(&self) -> Option<f64> {
        // SAFETY: `libc::tm` only holds integers and (on some libcs) a nullable pointer, so
        // all-zero is a valid value.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        tm.tm_year = self.year - 1900;
        tm.tm_mon = self.month - 1;
        tm.tm_mday = self.day;
        tm.tm_hour = self.hour;
        tm.tm_min = self.minute;
        tm.tm_sec = self.second;
        // The log does not say whether daylight saving time was in effect; let the C library
        // work it out from the zone rules.
        tm.tm_isdst = -1;
        // SAFETY: `tm` is a valid, initialised `struct tm` that mktime may normalise in place.
        let t = unsafe { libc::mktime(&mut tm) };
        (t != -1).then_some(t as f64 + self.frac)
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: i32) -> i32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date.
fn days_from_civil(year: i32, month: i32, day: i32) -> i64 {
    // Count years from March so that the leap day is the last day of the year; then a year's
    // day number does not depend on whether it is a leap year.
    let year = i64::from(if month <= 2 { year - 1 } else { year });
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719468 days separate 0000-03-01 from 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

/// Parses a run of ASCII digits.
fn digits(text: &str) -> Option<i32> {
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `HH:MM:SS[.fff]` into (hour, minute, second, fraction).
fn parse_clock(text: &str) -> Option<(i32, i32, i32, f64)> {
    let mut parts = text.split(':');
    let hour = digits(parts.next()?)?;
    let minute = digits(parts.next()?)?;
    let seconds = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let (whole, fraction) = match seconds.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (seconds, ""),
    };
    let mut frac = 0.0;
    let mut scale = 0.1;
    for b in fraction.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        frac += f64::from(b - b'0') * scale;
        scale /= 10.0;
    }
    Some((hour, minute, digits(whole)?, frac))
}

fn month_number(name: &str) -> Option<i32> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let index = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(name))?;
    i32::try_from(index + 1).ok()
}

/// `dd/Mon/yyyy:HH:MM:SS[.fff][ ±hhmm]` to Unix seconds. nginx writes the zone offset;
/// HAProxy writes local time without one, which is read in this host's zone (the tracer runs
/// on the proxy's host).
fn parse_clf_time(text: &str) -> Option<f64> {
    let (stamp, zone) = match text.split_once(' ') {
        Some((stamp, zone)) => (stamp, Some(zone.trim())),
        None => (text, None),
    };
    let (date, clock) = stamp.split_once(':')?;
    let mut date = date.split('/');
    let day = digits(date.next()?)?;
    let month = month_number(date.next()?)?;
    let year = digits(date.next()?)?;
    if date.next().is_some() {
        return None;
    }
    let (hour, minute, second, frac) = parse_clock(clock)?;
    let civil = Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        frac,
    };
    if !civil.is_valid() {
        return None;
    }
    match zone {
        Some(zone) => Some(civil.utc_seconds() - f64::from(zone_offset(zone)?)),
        None => civil.local_seconds(),
    }
}

/// `+hhmm`, `-hh:mm`, `Z`: seconds east of UTC.
fn zone_offset(zone: &str) -> Option<i32> {
    if zone.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let (sign, rest) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    let (hours, minutes) = match rest.split_once(':') {
        Some(parts) => parts,
        None => (rest.get(..2)?, rest.get(2..)?),
    };
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let (hours, minutes) = (digits(hours)?, digits(minutes)?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

/// RFC 3339 (`2026-11-24T12:47:56.123Z`, `...+01:00`) to Unix seconds.
fn parse_rfc3339(text: &str) -> Option<f64> {
    let date = text.get(..10)?;
    let rest = text.get(10..)?;
    let mut date = date.split('-');
    let year = digits(date.next()?)?;
    let month = digits(date.next()?)?;
    let day = digits(date.next()?)?;
    if date.next().is_some() {
        return None;
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let zone_at = rest.find(['Z', 'z', '+', '-'])?;
    let (clock, zone) = rest.split_at(zone_at);
    let (hour, minute, second, frac) = parse_clock(clock)?;
    let civil = Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        frac,
    };
    if !civil.is_valid() {
        return None;
    }
    Some(civil.utc_seconds() - f64::from(zone_offset(zone)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-24T12:47:56Z.
    const T0: f64 = 1_795_524_476.0;

    fn nginx(line: &str) -> LogEntry {
        parse_line(LogFormat::Nginx, line).unwrap()
    }

    fn haproxy(line: &str) -> LogEntry {
        parse_line(LogFormat::Haproxy, line).unwrap()
    }

    fn envoy(line: &str) -> LogEntry {
        parse_line(LogFormat::Envoy, line).unwrap()
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-6)
    }

    const NGINX_COMBINED: &str = r#"10.0.0.9 - - [24/Nov/2026:12:47:56 +0000] "GET /refused HTTP/1.1" 502 157 "-" "curl/7.88.1""#;
    const NGINX_UPSTREAM: &str = r#"10.0.0.9 - - [24/Nov/2026:12:47:56 +0000] "GET /refused HTTP/1.1" 502 157 "-" "curl/7.88.1" 10.231.5.2:9 502 - 0.001"#;
    const NGINX_RETRIES: &str = r#"10.0.0.9 - alice [24/Nov/2026:12:47:56 +0000] "POST /api/v1/items?q=a%20b HTTP/1.1" 200 512 "https://example.com/" "Mozilla/5.0 (X11; Linux x86_64)" 10.0.0.5:80, 10.0.0.6:80 502, 200 0.001, 0.002 0.001, 0.010"#;
    const HAPROXY_PLAIN: &str = r#"10.0.0.9:56694 [24/Nov/2026:12:47:56.123] fe b_refused/s1 0/0/-1/-1/0 503 217 - - SC-- 1/1/0/0/0 0/0 "GET /refused HTTP/1.1""#;
    const HAPROXY_SYSLOG: &str = r#"Nov 24 12:47:56 localhost haproxy[123]: 10.0.0.9:56694 [24/Nov/2026:12:47:56.123] fe~ be_app/s2 0/0/5/1002/1010 504 194 - - sH-- 2/2/1/1/+3 0/0 "GET /slow HTTP/1.1""#;
    const ENVOY_FAILED: &str = r#"[2026-11-24T12:47:56.123Z] "GET /x HTTP/1.1" 503 UF,URX 0 91 1002 - "-" "curl/7.88.1" "c1e0a0b2-1d5e-4c1f-9a57-7f1f0f3f9a11" "example" "10.0.0.5:8080""#;

    #[test]
    fn nginx_combined() {
        let e = nginx(NGINX_COMBINED);
        assert_eq!(e.status, 502);
        assert_eq!(e.client_ip, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(e.client_port, None);
        assert!(e.upstreams.is_empty());
        assert!(e.upstream_statuses.is_empty());
        assert_eq!(e.upstream_connect_time_s, None);
        assert_eq!(e.upstream_response_time_s, None);
        assert_eq!(e.retries, None);
        assert_eq!(e.termination_state, None);
        assert_eq!(e.response_flags, None);
        assert!(close(e.time_unix_s, T0));
    }

    #[test]
    fn nginx_with_upstream_fields() {
        let e = nginx(NGINX_UPSTREAM);
        assert_eq!(e.status, 502);
        assert_eq!(e.upstreams, ["10.231.5.2:9"]);
        assert_eq!(e.upstream_statuses, ["502"]);
        assert_eq!(e.upstream_connect_time_s, None);
        assert!(close(e.upstream_response_time_s, 0.001));
        assert_eq!(e.retries, Some(0));
    }

    #[test]
    fn nginx_several_upstreams() {
        let e = nginx(NGINX_RETRIES);
        assert_eq!(e.status, 200);
        assert_eq!(e.upstreams, ["10.0.0.5:80", "10.0.0.6:80"]);
        assert_eq!(e.upstream_statuses, ["502", "200"]);
        assert!(close(e.upstream_connect_time_s, 0.002));
        assert!(close(e.upstream_response_time_s, 0.010));
        assert_eq!(e.retries, Some(1));
    }

    #[test]
    fn nginx_upstream_groups_across_redirects() {
        let e = nginx(
            r#"10.0.0.9 - - [24/Nov/2026:12:47:56 +0000] "GET / HTTP/1.1" 504 0 "-" "curl/8" 10.0.0.5:80, 10.0.0.6:80 : unix:/run/app.sock 502, 504 : 504 0.001, - : 0.003 -, - : 60.001"#,
        );
        assert_eq!(
            e.upstreams,
            ["10.0.0.5:80", "10.0.0.6:80", "unix:/run/app.sock"]
        );
        assert_eq!(e.upstream_statuses, ["502", "504", "504"]);
        assert!(close(e.upstream_connect_time_s, 0.003));
        assert!(close(e.upstream_response_time_s, 60.001));
        assert_eq!(e.retries, Some(2));
    }

    #[test]
    fn nginx_dash_upstream_fields_are_absent() {
        let e = nginx(
            r#"10.0.0.9 - - [24/Nov/2026:12:47:56 +0000] "GET / HTTP/1.1" 400 0 "-" "-" - - - -"#,
        );
        assert_eq!(e.status, 400);
        assert!(e.upstreams.is_empty());
        assert!(e.upstream_statuses.is_empty());
        assert_eq!(e.upstream_connect_time_s, None);
        assert_eq!(e.upstream_response_time_s, None);
        assert_eq!(e.retries, None);
    }

    #[test]
    fn nginx_ipv6_client_and_zone_offset() {
        let e =
            nginx(r#"::1 - - [24/Nov/2026:05:47:56 -0700] "GET / HTTP/1.1" 503 0 "-" "curl/8""#);
        assert_eq!(e.client_ip, Some("::1".parse().unwrap()));
        assert!(close(e.time_unix_s, T0));
        let e = nginx(
            r#"::ffff:10.0.0.1 - - [25/Nov/2026:01:17:56 +1230] "GET / HTTP/1.1" 503 0 "-" "curl/8""#,
        );
        assert!(e.client_ip.is_some());
        assert!(close(e.time_unix_s, T0));
    }

    #[test]
    fn nginx_quotes_with_spaces_escapes_and_main_format() {
        // `main` adds "$http_x_forwarded_for" before the upstream fields.
        let e = nginx(
            r#"192.168.1.20 - - [24/Nov/2026:12:47:56 +0000] "GET /a b \"c\" HTTP/1.1" 502 10 "-" "Mozilla \"quoted\" (X11; Linux)" "203.0.113.7, 10.0.0.1" 10.0.0.5:80 502 0.000 0.004"#,
        );
        assert_eq!(e.status, 502);
        assert_eq!(e.upstreams, ["10.0.0.5:80"]);
        assert_eq!(e.upstream_statuses, ["502"]);
        assert!(close(e.upstream_connect_time_s, 0.0));
        assert!(close(e.upstream_response_time_s, 0.004));
    }

    #[test]
    fn nginx_unparseable_time_is_absent_not_an_error() {
        let e =
            nginx(r#"10.0.0.9 - - [31/Feb/2026:12:47:56 +0000] "GET / HTTP/1.1" 502 0 "-" "-""#);
        assert_eq!(e.status, 502);
        assert_eq!(e.time_unix_s, None);
        let e = nginx(r#"10.0.0.9 - - [yesterday] "GET / HTTP/1.1" 502 0 "-" "-""#);
        assert_eq!(e.time_unix_s, None);
    }

    #[test]
    fn entries_hold_no_payload() {
        for e in [
            nginx(NGINX_RETRIES),
            haproxy(HAPROXY_SYSLOG),
            envoy(ENVOY_FAILED),
        ] {
            let shown = format!("{e:?}");
            for secret in ["/api", "/slow", "/x", "Mozilla", "curl", "alice", "example"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
        }
    }

    #[test]
    fn nginx_malformed() {
        let cases = [
            ("", ParseError::Empty),
            ("   \t", ParseError::Empty),
            (
                r#"10.0.0.9 - - [24/Nov/2026:12:47:56 +0000] "GET /refused HTTP/1.1""#,
                ParseError::MissingField("status"),
            ),
            (
                r#"10.0.0.9 - - [24/Nov/2026:12:47:56 +0000] "GET /refused HTTP/1.1" 502 157 "-" "curl"#,
                ParseError::Unterminated("quoted string"),
            ),
            (
                r#"10.0.0.9 - - [24/Nov/2026:12:47:56 +0000"#,
                ParseError::Unterminated("`[`"),
            ),
            (
                r#"10.0.0.9 - - [24/Nov/2026:12:47:56 +0000] "GET / HTTP/1.1" abc 157 "-" "-""#,
                ParseError::NotANumber {
                    field: "status",
                    value: "abc".to_string(),
                },
            ),
            (
                r#"10.0.0.9 - - [24/Nov/2026:12:47:56 +0000] "GET / HTTP/1.1" +502 157 "-" "-""#,
                ParseError::NotANumber {
                    field: "status",
                    value: "+502".to_string(),
                },
            ),
            (
                HAPROXY_PLAIN,
                ParseError::Malformed {
                    field: "local time",
                    expected: "in brackets",
                },
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_line(LogFormat::Nginx, line), Err(expected), "{line}");
        }
    }

    #[test]
    fn error_messages_say_what_is_wrong() {
        assert_eq!(
            ParseError::MissingField("status").to_string(),
            "no status field"
        );
        let err = parse_line(
            LogFormat::Nginx,
            r#"1.2.3.4 - - [24/Nov/2026:12:47:56 +0000] "GET / HTTP/1.1" abc 0 "-" "-""#,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "status `abc` is not a number");
        // Long junk is cut short so that an error message cannot carry a whole payload.
        let err = not_a_number("status", &"é".repeat(100));
        assert_eq!(
            err.to_string(),
            format!("status `{}…` is not a number", "é".repeat(24))
        );
    }

    #[test]
    fn haproxy_plain() {
        let e = haproxy(HAPROXY_PLAIN);
        assert_eq!(e.status, 503);
        assert_eq!(e.client_ip, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(e.client_port, Some(56694));
        assert_eq!(e.upstreams, ["b_refused/s1"]);
        assert!(e.upstream_statuses.is_empty());
        // Tc = -1: never connected; Tr = -1: no response.
        assert_eq!(e.upstream_connect_time_s, None);
        assert_eq!(e.upstream_response_time_s, None);
        assert_eq!(e.termination_state.as_deref(), Some("SC--"));
        assert_eq!(e.retries, Some(0));
        assert_eq!(e.response_flags, None);
    }

    #[test]
    fn haproxy_time_is_local_time() {
        let e = haproxy(HAPROXY_PLAIN);
        let t = e.time_unix_s.unwrap();
        assert!((t.fract() - 0.123).abs() < 1e-6, "{t}");
        // Reading the result back in the local zone gives the logged wall-clock time.
        let secs = t.floor() as libc::time_t;
        // SAFETY: `libc::tm` is plain data; all-zero is valid.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to valid, live values.
        assert!(!unsafe { libc::localtime_r(&secs, &mut tm) }.is_null());
        assert_eq!(
            (tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday),
            (2026, 11, 24)
        );
        assert_eq!((tm.tm_hour, tm.tm_min, tm.tm_sec), (12, 47, 56));
    }

    #[test]
    fn haproxy_syslog_prefix_timers_and_redispatch() {
        let e = haproxy(HAPROXY_SYSLOG);
        assert_eq!(e.status, 504);
        assert_eq!(e.client_port, Some(56694));
        assert_eq!(e.upstreams, ["be_app/s2"]);
        assert!(close(e.upstream_connect_time_s, 0.005));
        assert!(close(e.upstream_response_time_s, 1.002));
        assert_eq!(e.termination_state.as_deref(), Some("sH--"));
        assert_eq!(e.retries, Some(3));
        assert!(e.time_unix_s.is_some());
    }

    #[test]
    fn haproxy_rfc5424_header_ipv6_client_and_captured_headers() {
        let e = haproxy(
            r#"<134>1 2026-11-24T12:47:56+00:00 lb haproxy 123 - - [::1]:5000 [24/Nov/2026:12:47:56.000] fe be/<NOSRV> 0/-1/-1/-1/0 503 217 - - SC-- 0/0/0/0/0 0/0 {Mozilla/5.0 (X11)|example.com} "GET /truncated-by-haproxy"#,
        );
        assert_eq!(e.client_ip, Some("::1".parse().unwrap()));
        assert_eq!(e.client_port, Some(5000));
        assert_eq!(e.upstreams, ["be/<NOSRV>"]);
        assert_eq!(e.status, 503);
        assert_eq!(e.retries, Some(0));
    }

    #[test]
    fn haproxy_malformed() {
        let cases = [
            ("", ParseError::Empty),
            (NGINX_COMBINED, ParseError::NotHaproxy),
            ("10.0.0.9:56694", ParseError::NotHaproxy),
            (
                "10.0.0.9:56694 [24/Nov/2026:12:47:56.123] fe b/s1 0/0/-1/-1/0",
                ParseError::MissingField("status"),
            ),
            (
                "10.0.0.9:56694 [24/Nov/2026:12:47:56.123] fe b/s1 0/0/-1/-1/0 5o3 217 - - SC-- 1/1/0/0/0",
                ParseError::NotANumber {
                    field: "status",
                    value: "5o3".to_string(),
                },
            ),
            (
                "10.0.0.9:56694 [24/Nov/2026:12:47:56.123] fe b/s1 0/0 503 217 - - SC-- 1/1/0/0/0",
                ParseError::Malformed {
                    field: "timers",
                    expected: "`Tq/Tw/Tc/Tr/Tt`",
                },
            ),
            (
                "10.0.0.9:56694 [24/Nov/2026:12:47:56.123] fe b/s1 0/0/x/-1/0 503 217 - - SC-- 1/1/0/0/0",
                ParseError::NotANumber {
                    field: "timer",
                    value: "x".to_string(),
                },
            ),
            (
                "10.0.0.9:56694 [24/Nov/2026:12:47:56.123] fe b/s1 0/0/-1/-1/0 503 217 - - SC-- 1/1/0",
                ParseError::Malformed {
                    field: "connection counts",
                    expected: "`actconn/feconn/beconn/srv_conn/retries`",
                },
            ),
            (
                "10.0.0.9:56694 [24/Nov/2026:12:47:56.123] fe noslash 0/0/-1/-1/0 503",
                ParseError::Malformed {
                    field: "backend/server",
                    expected: "`backend/server`",
                },
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(
                parse_line(LogFormat::Haproxy, line),
                Err(expected),
                "{line}"
            );
        }
    }

    #[test]
    fn envoy_failed_upstream() {
        let e = envoy(ENVOY_FAILED);
        assert_eq!(e.status, 503);
        assert_eq!(e.response_flags.as_deref(), Some("UF,URX"));
        assert_eq!(e.upstreams, ["10.0.0.5:8080"]);
        assert_eq!(e.upstream_response_time_s, None);
        assert_eq!(e.upstream_connect_time_s, None);
        assert_eq!(e.client_ip, None);
        assert_eq!(e.retries, None);
        assert!(close(e.time_unix_s, T0 + 0.123));
    }

    #[test]
    fn envoy_success_and_absent_values() {
        let e = envoy(
            r#"[2026-11-24T13:47:56.000+01:00] "POST /api HTTP/2" 200 - 120 512 12 10 "203.0.113.7" "grpc-go/1.60" "id-1" "api.internal" "10.0.0.6:9000""#,
        );
        assert_eq!(e.status, 200);
        assert_eq!(e.response_flags, None);
        assert!(close(e.upstream_response_time_s, 0.010));
        assert!(close(e.time_unix_s, T0));
        let e = envoy(
            r#"[2026-11-24T12:47:56.000Z] "GET / HTTP/1.1" 0 DC 0 0 3 - "-" "-" "-" "-" "-""#,
        );
        assert_eq!(e.status, 0);
        assert_eq!(e.response_flags.as_deref(), Some("DC"));
        assert!(e.upstreams.is_empty());
        let e = envoy(
            r#"[not a time] "GET / HTTP/1.1" 504 UT 0 24 15000 15001 "-" "-" "-" "-" "10.0.0.5:8080""#,
        );
        assert_eq!(e.time_unix_s, None);
        assert!(close(e.upstream_response_time_s, 15.001));
    }

    #[test]
    fn envoy_malformed() {
        let cases = [
            ("", ParseError::Empty),
            (
                r#"[2026-11-24T12:47:56.123Z] "GET /x HTTP/1.1" 503 UF,URX 0 91 1002 - "-" "curl/7.88.1""#,
                ParseError::MissingField("request id"),
            ),
            (
                r#"[2026-11-24T12:47:56.123Z] "GET /x HTTP/1.1" x UF 0 91 1002 - "-" "-" "-" "-" "-""#,
                ParseError::NotANumber {
                    field: "status",
                    value: "x".to_string(),
                },
            ),
            (
                r#"[2026-11-24T12:47:56.123Z] "GET /x HTTP/1.1" 503 UF 0 91 1002 soon "-" "-" "-" "-" "-""#,
                ParseError::NotANumber {
                    field: "upstream service time",
                    value: "soon".to_string(),
                },
            ),
            (
                NGINX_COMBINED,
                ParseError::Malformed {
                    field: "start time",
                    expected: "in brackets",
                },
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_line(LogFormat::Envoy, line), Err(expected), "{line}");
        }
    }

    #[test]
    fn every_prefix_parses_or_fails_without_panicking() {
        let lines = [
            NGINX_COMBINED,
            NGINX_UPSTREAM,
            NGINX_RETRIES,
            r#"::1 - - [24/Nov/2026:05:47:56 -0700] "GET /é \"x\" HTTP/1.1" 503 0 "-" "ü" "-" - : a:1, b:2 - - -"#,
            HAPROXY_PLAIN,
            HAPROXY_SYSLOG,
            r#"[::1]:5000 [24/Nov/2026:12:47:56.000] fe be/s1 0/0/1/2/3 200 1 - - ---- 0/0/0/0/0 0/0 "GET /ö""#,
            ENVOY_FAILED,
            r#"[2026-11-24T13:47:56.000+01:00] "POST /api HTTP/2" 200 - 120 512 12 10 "203.0.113.7" "grpc" "id" "h" "10.0.0.6:9000""#,
        ];
        let formats = [LogFormat::Nginx, LogFormat::Haproxy, LogFormat::Envoy];
        for line in lines {
            for (cut, _) in line.char_indices().chain([(line.len(), ' ')]) {
                for format in formats {
                    let _ = parse_line(format, &line[..cut]);
                    let _ = parse_line(format, &line[cut..]);
                }
            }
        }
    }

    #[test]
    fn time_parsers() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert!(close(parse_clf_time("24/Nov/2026:12:47:56 +0000"), T0));
        assert!(close(
            parse_clf_time("29/Feb/2024:00:00:00 +0000"),
            1_709_164_800.0
        ));
        assert_eq!(parse_clf_time("29/Feb/2025:00:00:00 +0000"), None);
        assert_eq!(parse_clf_time("24/Nov/2026:24:00:00 +0000"), None);
        assert_eq!(parse_clf_time("24/Nov/2026:12:47:56 +00"), None);
        assert_eq!(parse_clf_time("24/Foo/2026:12:47:56 +0000"), None);
        assert!(close(parse_rfc3339("2026-11-24T12:47:56Z"), T0));
        assert!(close(
            parse_rfc3339("2026-11-24t07:47:56.5-05:00"),
            T0 + 0.5
        ));
        assert_eq!(parse_rfc3339("2026-11-24T12:47:56"), None);
        assert_eq!(parse_rfc3339("2026-13-24T12:47:56Z"), None);
        assert_eq!(parse_rfc3339("2026-11-24é12:47:56Z"), None);
    }

    #[test]
    fn log_spec() {
        let spec = |s: &str| LogSpec::parse(s);
        assert_eq!(
            spec("/var/log/nginx/access.log"),
            Ok(LogSpec {
                path: "/var/log/nginx/access.log".into(),
                format: LogFormat::Nginx
            })
        );
        assert_eq!(
            spec("/var/log/haproxy.log:haproxy"),
            Ok(LogSpec {
                path: "/var/log/haproxy.log".into(),
                format: LogFormat::Haproxy
            })
        );
        assert_eq!(
            spec("/srv/a:b/access.log"),
            Ok(LogSpec {
                path: "/srv/a:b/access.log".into(),
                format: LogFormat::Nginx
            })
        );
        assert_eq!(
            spec("/var/log/a:b.log:envoy"),
            Ok(LogSpec {
                path: "/var/log/a:b.log".into(),
                format: LogFormat::Envoy
            })
        );
        assert_eq!(
            spec("x.log:apache"),
            Err("unknown access-log format `apache` (nginx, haproxy or envoy)".to_string())
        );
        assert!(spec("").is_err());
        assert!(spec(":nginx").is_err());
        assert_eq!(LogFormat::Envoy.name(), "envoy");
    }
}
