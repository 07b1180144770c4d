//! Draws the model: header, upstream table, verdicts pane, key help, and a verdict's evidence
//! timeline over them when one is open.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap},
};

use super::model::{Focus, Model, UpstreamRow, VerdictRow, evidence_lines};

/// Where the view reads from, for the header.
#[derive(Debug, Clone)]
pub struct Source {
    /// `socket /run/tracer/tracer.sock` or `in process`.
    pub label: String,
}

/// Microseconds, short: `850µs`, `12.3ms`, `1.20s`; `-` when unknown.
fn dur(us: Option<f64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 1_000.0 => format!("{us:.0}µs"),
        Some(us) if us < 1_000_000.0 => format!("{:.1}ms", us / 1_000.0),
        Some(us) => format!("{:.2}s", us / 1_000_000.0),
    }
}

fn uptime(s: f64) -> String {
    let s = s as u64;
    match s {
        0..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn header(m: &Model, source: &Source) -> Paragraph<'static> {
    let h = m.health();
    let attached = h.hooks.iter().filter(|(_, up)| *up).count();
    let missing: Vec<&str> = h
        .hooks
        .iter()
        .filter(|(_, up)| !*up)
        .map(|(n, _)| n.as_str())
        .collect();
    let warn = Style::default().fg(Color::Yellow);
    let bad = Style::default().fg(Color::Red).add_modifier(Modifier::BOLD);
    let mut first = vec![
        Span::styled("tracer", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "  {}  events/s {:.0}  lost ",
            source.label,
            m.events_per_second()
        )),
        Span::styled(
            h.lost.to_string(),
            if h.lost > 0 { bad } else { Style::default() },
        ),
        Span::raw(format!(
            "  uptime {}",
            m.uptime_s().map(uptime).unwrap_or_else(|| "-".into())
        )),
    ];
    if h.missed_by_view > 0 {
        first.push(Span::styled(
            format!("  view missed {}", h.missed_by_view),
            warn,
        ));
    }
    if h.write_errors > 0 {
        first.push(Span::styled(
            format!("  write errors {}", h.write_errors),
            bad,
        ));
    }
    if m.paused() {
        first.push(Span::styled("  PAUSED", warn.add_modifier(Modifier::BOLD)));
    }
    if let Some(why) = &m.ended {
        first.push(Span::styled(format!("  {why}"), bad));
    }
    let mut second = vec![Span::raw(format!(
        "hooks {attached}/{} attached",
        h.hooks.len()
    ))];
    if !missing.is_empty() {
        second.push(Span::styled(
            format!("  missing: {}", missing.join(", ")),
            warn,
        ));
    }
    if let Some(k) = &h.kernel {
        second.push(Span::raw(format!("  kernel {k}")));
    }
    if !m.filter.is_empty() {
        second.push(Span::styled(format!("  filter: {}", m.filter), warn));
    }
    Paragraph::new(vec![Line::from(first), Line::from(second)])
        .block(Block::default().borders(Borders::BOTTOM))
}

fn causes(r: &UpstreamRow) -> String {
    r.errors_5xx
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn upstream_table(m: &Model, rows: &[UpstreamRow]) -> Table<'static> {
    let head = Row::new([
        "upstream",
        "conn/s",
        "conn p50",
        "conn p99",
        "ttfb p50",
        "ttfb p99",
        "retrans",
        "refused",
        "timeouts",
        "resets",
        "5xx by cause",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let body = rows.iter().map(|r| {
        let style = if r.total_5xx() > 0 {
            Style::default().fg(Color::Red)
        } else {
            Style::default()
        };
        Row::new(vec![
            Cell::from(r.addr.clone()),
            Cell::from(format!("{:.1}", r.conns_per_s)),
            Cell::from(dur(r.connect_p50_us)),
            Cell::from(dur(r.connect_p99_us)),
            Cell::from(dur(r.ttfb_p50_us)),
            Cell::from(dur(r.ttfb_p99_us)),
            Cell::from(r.retransmits.to_string()),
            Cell::from(r.refused.to_string()),
            Cell::from(r.timeouts.to_string()),
            Cell::from(r.resets.to_string()),
            Cell::from(causes(r)),
        ])
        .style(style)
    });
    let widths = [
        Constraint::Min(21),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Fill(2),
    ];
    Table::new(body, widths)
        .header(head)
        .block(pane(
            format!(" Upstreams ({}, sorted by {}) ", rows.len(), m.sort.label()),
            m.focus == Focus::Upstreams,
        ))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
}

fn pane(title: String, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::default().fg(Color::Cyan)
    } else {
        Style::default()
    };
    Block::default()
        .borders(Borders::ALL)
        .border_style(style)
        .title(title)
}

fn verdict_table(m: &Model, rows: &[&VerdictRow]) -> Table<'static> {
    let head = Row::new(["time", "status", "cause", "upstream", "conf", "summary"])
        .style(Style::default().add_modifier(Modifier::BOLD));
    let body = rows.iter().map(|v| {
        Row::new(vec![
            v.time.clone(),
            v.status.to_string(),
            v.cause.clone(),
            v.upstream.clone(),
            format!("{:.2}", v.confidence),
            v.summary.clone(),
        ])
    });
    let widths = [
        Constraint::Length(12),
        Constraint::Length(6),
        Constraint::Length(17),
        Constraint::Length(21),
        Constraint::Length(4),
        Constraint::Fill(1),
    ];
    Table::new(body, widths)
        .header(head)
        .block(pane(
            format!(" Verdicts ({}, newest first; Enter opens) ", rows.len()),
            m.focus == Focus::Verdicts,
        ))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
}

fn help(m: &Model) -> Paragraph<'static> {
    let text = match (&m.filter_input, &m.detail) {
        (Some(input), _) => {
            format!("filter (upstream or cause): {input}_   Enter apply  Esc cancel")
        }
        (None, Some(_)) => "Esc back  q quit".into(),
        (None, None) => {
            "q quit  ↑↓ move  Tab switch pane  Enter open  p pause  / filter  s sort".into()
        }
    };
    Paragraph::new(text).style(Style::default().fg(Color::DarkGray))
}

fn detail(v: &VerdictRow) -> Paragraph<'static> {
    let r = &v.record;
    let field = |k: &str| match r.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    };
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut lines = vec![
        Line::from(Span::styled(v.summary.clone(), bold)),
        Line::raw(""),
        Line::raw(format!(
            "status {}  cause {}  confidence {:.2}  matched by {}  source {}",
            v.status,
            v.cause,
            v.confidence,
            field("matched_by"),
            field("source")
        )),
        Line::raw(format!(
            "client {}  upstream {}  process {}[{}]  at {}",
            field("client"),
            v.upstream,
            field("comm"),
            field("pid"),
            field("time")
        )),
    ];
    let contributing = field("contributing");
    if contributing != "[]" && contributing != "-" {
        lines.push(Line::raw(format!("contributing {contributing}")));
    }
    if let Some(advice) = r.get("advice").and_then(|a| a.as_str()) {
        lines.push(Line::styled(
            format!("advice: {advice}"),
            Style::default().fg(Color::Yellow),
        ));
    }
    lines.push(Line::raw(""));
    lines.push(Line::from(Span::styled(
        "evidence (ms from the response)",
        bold,
    )));
    let evidence = evidence_lines(r);
    if evidence.is_empty() {
        lines.push(Line::raw(
            "  none: no network event of the upstream connection",
        ));
    }
    for (t, kind, what) in evidence {
        lines.push(Line::raw(format!("  {t:>+10.3}  {kind:<15} {what}")));
    }
    Paragraph::new(lines).wrap(Wrap { trim: false }).block(
        Block::default()
            .borders(Borders::ALL)
            .title(" Verdict ")
            .border_style(Style::default().fg(Color::Cyan)),
    )
}

/// A rectangle of `pct_x` × `pct_y` percent in the middle of `area`.
fn centered(area: Rect, pct_x: u16, pct_y: u16) -> Rect {
    let w = area.width * pct_x / 100;
    let h = area.height * pct_y / 100;
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// Draws one frame.
pub fn draw(f: &mut Frame, m: &Model, source: &Source) {
    let [top, ups, verdicts, keys] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Percentage(40),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(header(m, source), top);

    let rows = m.upstream_rows();
    let mut state = TableState::default();
    if m.focus == Focus::Upstreams && !rows.is_empty() {
        state.select(Some(m.upstream_sel.min(rows.len() - 1)));
    }
    f.render_stateful_widget(upstream_table(m, &rows), ups, &mut state);

    let vrows = m.verdict_rows();
    let mut state = TableState::default();
    if m.focus == Focus::Verdicts && !vrows.is_empty() {
        state.select(Some(m.verdict_sel.min(vrows.len() - 1)));
    }
    f.render_stateful_widget(verdict_table(m, &vrows), verdicts, &mut state);
    f.render_widget(help(m), keys);

    if let Some(v) = &m.detail {
        let area = centered(f.area(), 90, 80);
        f.render_widget(Clear, area);
        f.render_widget(detail(v), area);
    }
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};
    use serde_json::json;

    use super::*;
    use crate::live::model::Action;

    fn screen(m: &Model) -> String {
        let mut t = Terminal::new(TestBackend::new(160, 40)).unwrap();
        let source = Source {
            label: "socket /tmp/t.sock".into(),
        };
        t.draw(|f| draw(f, m, &source)).unwrap();
        let buf = t.backend().buffer();
        let mut out = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn the_screen_shows_health_upstreams_and_verdicts() {
        let mut m = Model::new();
        m.ingest(
            &json!({"type":"start","time":"2026-11-24T12:00:00Z","kernel":"6.18.0",
            "hooks":[{"hook":"a","attached":true},{"hook":"uprobe/x:SSL_write","attached":false}]}),
        );
        m.ingest(&json!({"type":"stats","time":"2026-11-24T12:00:10Z","uptime_s":75.0,"lost":3}));
        m.ingest(
            &json!({"type":"connect","time":"2026-11-24T12:00:10Z","role":"upstream",
            "raddr":"10.0.2.2:8080","latency_us":850.0}),
        );
        m.ingest(
            &json!({"type":"verdict","time":"2026-11-24T12:00:10.250Z","status":502,
            "upstream":"10.0.2.2:8081","cause":"connect_refused","confidence":0.95,
            "summary":"502 by nginx[7]: the upstream refused the connection",
            "evidence":[{"type":"connect_error","t_ms":-0.4,"laddr":"10.0.2.1:41000",
                         "raddr":"10.0.2.2:8081","error":"ECONNREFUSED","cause":"rst"}]}),
        );
        let s = screen(&m);
        assert!(s.contains("lost 3"), "{s}");
        assert!(s.contains("uptime 0m10s"), "{s}");
        assert!(s.contains("hooks 1/2 attached"), "{s}");
        assert!(s.contains("missing: uprobe/x:SSL_write"), "{s}");
        assert!(s.contains("10.0.2.2:8080"), "{s}");
        assert!(s.contains("850µs"), "{s}");
        assert!(s.contains("connect_refused 1"), "{s}");
        assert!(s.contains("12:00:10.250"), "{s}");
        assert!(s.contains("the upstream refused the connection"), "{s}");

        m.apply(Action::Open);
        let s = screen(&m);
        assert!(s.contains("evidence (ms from the response)"), "{s}");
        assert!(s.contains("-0.400  connect_error"), "{s}");
        assert!(s.contains("error=ECONNREFUSED"), "{s}");

        m.apply(Action::Back);
        m.apply(Action::TogglePause);
        m.apply(Action::StartFilter);
        m.apply(Action::FilterChar('z'));
        let s = screen(&m);
        assert!(s.contains("PAUSED"), "{s}");
        assert!(s.contains("filter (upstream or cause): z_"), "{s}");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(dur(None), "-");
        assert_eq!(dur(Some(850.0)), "850µs");
        assert_eq!(dur(Some(12_345.0)), "12.3ms");
        assert_eq!(dur(Some(1_200_000.0)), "1.20s");
        assert_eq!(uptime(3725.0), "1h02m");
    }

    #[test]
    fn a_tiny_terminal_does_not_panic() {
        let mut m = Model::new();
        m.ingest(
            &json!({"type":"verdict","time":"2026-11-24T12:00:10Z","status":502,
            "upstream":null,"cause":"no_network_cause","summary":"x"}),
        );
        m.apply(Action::Open);
        for (w, h) in [(1, 1), (10, 3), (40, 8)] {
            let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
            let source = Source {
                label: String::new(),
            };
            t.draw(|f| draw(f, &m, &source)).unwrap();
        }
    }
}
