//! The live terminal view: `tracer live` (records from a daemon's control socket) and
//! `tracer run --live` (records from the same process). Records flow one way, from a feed into
//! the pure [`model::Model`]; [`view`] draws the model, [`input`] maps keys to model actions,
//! and [`term::TerminalGuard`] gives the terminal back however the view ends.

pub mod input;
pub mod model;
pub mod term;
pub mod view;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ratatui::crossterm::event::{self, Event as TermEvent, KeyEvent};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader},
    net::UnixStream,
    sync::{broadcast, mpsc, watch},
};

use self::{model::Model, term::TerminalGuard, view::Source};
use crate::sink::fanout::Fanout;

/// Time between frames; keys redraw at once.
const FRAME: Duration = Duration::from_millis(250);
/// Records taken in between two looks at the keyboard, so that a flood cannot freeze the keys.
const BATCH: usize = 4_096;
/// A control-socket line longer than this is not a record the daemon writes.
const MAX_LINE: usize = 1 << 20;

/// Why the live view could not run.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Nothing listens on the socket.
    #[error(
        "cannot connect to the tracer's control socket {path}: {source}. Is `tracer run` running? \
         It opens this socket unless given --no-socket; pass its --socket path here if it has another"
    )]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The terminal could not be taken over or drawn on.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// What a feed hands to the view.
pub enum Feed {
    /// One serialised record.
    Line(Arc<str>),
    /// The stream ended, and why.
    Ended(String),
}

/// `tracer live`: attaches to a daemon's control socket and shows its records until q.
pub async fn attach(socket: &Path) -> Result<(), LiveError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| LiveError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
    let (tx, rx) = mpsc::channel(BATCH * 4);
    tokio::spawn(read_socket(stream, tx));
    let (_stop_tx, stop_rx) = watch::channel(false);
    show(
        rx,
        Source {
            label: format!("socket {}", socket.display()),
        },
        stop_rx,
    )
    .await
}

async fn read_socket(stream: UnixStream, tx: mpsc::Sender<Feed>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let why = loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) => break "the tracer stopped (control socket closed)".to_string(),
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                let line = text.trim_end_matches('\n');
                if tx.send(Feed::Line(Arc::from(line))).await.is_err() {
                    return;
                }
            }
            Err(e) => break format!("reading the control socket failed: {e}"),
        }
    };
    let _ = tx.send(Feed::Ended(why)).await;
}

/// A feed of the records published in this process, starting with the recent ones.
pub fn from_fanout(fanout: &Fanout) -> mpsc::Receiver<Feed> {
    let (tx, rx) = mpsc::channel(BATCH * 4);
    let (recent, mut sub) = fanout.subscribe();
    tokio::spawn(async move {
        for line in recent {
            if tx.send(Feed::Line(line)).await.is_err() {
                return;
            }
        }
        loop {
            let feed = match sub.recv().await {
                Ok(line) => Feed::Line(line),
                // The view fell behind: it says so in its header instead of slowing the tracer.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Feed::Line(Arc::from(format!("{{\"type\":\"lagged\",\"missed\":{n}}}")))
                }
                Err(broadcast::error::RecvError::Closed) => Feed::Ended("tracing stopped".into()),
            };
            let ended = matches!(feed, Feed::Ended(_));
            if tx.send(feed).await.is_err() || ended {
                return;
            }
        }
    });
    rx
}

/// Runs the view of this process's records on a thread of its own, so that parsing records
/// and drawing never delay the ring-buffer reader. The receiver gets the view's result when
/// it has ended and given the terminal back; it is closed without one if the view panicked.
pub fn spawn(
    fanout: Fanout,
    source: Source,
    stop: watch::Receiver<bool>,
) -> std::io::Result<tokio::sync::oneshot::Receiver<Result<(), LiveError>>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("live-view".into())
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(async { show(from_fanout(&fanout), source, stop).await }),
                Err(e) => Err(LiveError::Terminal(e)),
            };
            let _ = tx.send(result);
        })?;
    Ok(rx)
}

/// Reads keys on a thread of its own (the terminal read blocks) until `done`.
fn key_reader(done: Arc<AtomicBool>) -> mpsc::Receiver<Option<KeyEvent>> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            match event::poll(Duration::from_millis(100)) {
                Ok(false) => {}
                Ok(true) => {
                    let sent = match event::read() {
                        Ok(TermEvent::Key(k)) => tx.blocking_send(Some(k)),
                        // A resize only needs a redraw.
                        Ok(TermEvent::Resize(..)) => tx.blocking_send(None),
                        Ok(_) => Ok(()),
                        Err(_) => return,
                    };
                    if sent.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    rx
}

fn wall_clock_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Shows records from `feed` until the user quits or `stop` turns true.
pub async fn show(
    mut feed: mpsc::Receiver<Feed>,
    source: Source,
    mut stop: watch::Receiver<bool>,
) -> Result<(), LiveError> {
    let mut guard = TerminalGuard::enter()?;
    let done = Arc::new(AtomicBool::new(false));
    let mut keys = key_reader(done.clone());
    let mut model = Model::new();
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut feed_open = true;
    let result = loop {
        tokio::select! {
            item = feed.recv(), if feed_open => {
                let mut next = item;
                let mut taken = 0;
                while let Some(f) = next {
                    match f {
                        Feed::Line(line) => model.ingest_line(&line),
                        Feed::Ended(why) => {
                            model.end(why);
                            feed_open = false;
                            break;
                        }
                    }
                    taken += 1;
                    if taken == BATCH {
                        break;
                    }
                    next = feed.try_recv().ok();
                }
                if taken == 0 && feed_open {
                    feed_open = false;
                    model.end("the record stream ended");
                }
            }
            key = keys.recv() => match key {
                Some(Some(k)) => {
                    if let Some(a) = input::action(k, model.filter_input.is_some()) {
                        model.apply(a);
                    }
                    if model.quit {
                        break Ok(());
                    }
                    if let Err(e) = guard.terminal.draw(|f| view::draw(f, &model, &source)) {
                        break Err(e.into());
                    }
                }
                // A resize: the next frame fits the new size.
                Some(None) => {}
                None => break Err(LiveError::Terminal(std::io::Error::other("reading keys failed"))),
            },
            _ = tick.tick() => {
                // Every frame, records or not: rates and uptime move with the clock.
                model.tick(wall_clock_ns());
                if let Err(e) = guard.terminal.draw(|f| view::draw(f, &model, &source)) {
                    break Err(e.into());
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break Ok(());
                }
            }
        }
    };
    done.store(true, Ordering::Relaxed);
    drop(guard);
    result
}
