//! Small helpers for running external commands.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// Prints the command line, runs it with inherited stdio and fails naming `step` and the command.
pub fn run(step: &str, cmd: &mut Command) -> Result<()> {
    let line = render(cmd);
    eprintln!("+ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("{step}: could not start `{line}`"))?;
    if !status.success() {
        bail!("{step}: `{line}` failed ({status})");
    }
    Ok(())
}

/// Runs a read-only probe quietly and returns its stdout, or `None` if it could not run or failed.
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`probe`], but keeps stdout even when the command exits non-zero.
pub fn probe_any_status(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Renders a command as a shell line (explicit env vars first) that a user could paste.
pub fn render(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        // Removed variables (`None`) do not matter when reproducing by hand.
        if let Some(value) = value {
            parts.push(format!(
                "{}={}",
                key.to_string_lossy(),
                quote(&value.to_string_lossy())
            ));
        }
    }
    parts.push(quote(&cmd.get_program().to_string_lossy()));
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    parts.join(" ")
}

/// Quotes `s` for a POSIX shell only when it contains characters the shell would interpret.
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_leaves_plain_words_alone() {
        assert_eq!(quote("bpf-linker@0.13.0"), "bpf-linker@0.13.0");
        assert_eq!(quote("--test-threads=1"), "--test-threads=1");
    }

    #[test]
    fn quote_wraps_special_characters() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("${Status}"), "'${Status}'");
    }

    #[test]
    fn render_puts_env_first() {
        let mut cmd = Command::new("cargo");
        cmd.args(["build", "-p", "tracer"]).env("RUSTFLAGS", "-L x");
        assert_eq!(render(&cmd), "RUSTFLAGS='-L x' cargo build -p tracer");
    }
}
