//! The terminal guard: raw mode and the alternate screen while the view runs, and the user's
//! terminal back afterwards, whether the view returns, fails or panics.

use std::{
    io::{self, Stdout},
    sync::Once,
};

use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor, execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
};

/// Puts the terminal back: cooked mode, main screen, visible cursor. Safe to call twice.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
}

/// Owns the terminal while the view is up.
pub struct TerminalGuard {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    /// Takes over the terminal. Fails when stdout is not one.
    pub fn enter() -> io::Result<Self> {
        if !io::IsTerminal::is_terminal(&io::stdout()) {
            return Err(io::Error::other(
                "the live view needs a terminal on stdout (use the trace file or `tracer report` instead)",
            ));
        }
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            // A panic prints its message after the terminal is back, where it can be read.
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        terminal::enable_raw_mode()?;
        let mut out = io::stdout();
        if let Err(e) = execute!(out, EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(out)) {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}
