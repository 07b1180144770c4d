//! `cargo xtask setup`: an idempotent installer whose checks are fast when nothing is missing.

use std::{
    collections::HashSet,
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd::{self, is_root, probe, probe_any_status, render};

/// Debian packages the integration tests and the demo rely on.
const PACKAGES: &[&str] = &[
    "nginx", "haproxy", "iproute2", "nftables", "curl", "bpftool", "wrk", "tmux", "python3",
    "procps", "tcpdump",
];

/// Packages that ship a system service which would otherwise keep port 80 busy.
const SERVICES: &[&str] = &["nginx", "haproxy"];

/// bpf-linker release the eBPF build is known to work with.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Runs every setup step in order, stopping at the first one that fails.
pub fn setup() -> Result<()> {
    nightly_toolchain()?;
    rust_src()?;
    lint_components()?;
    bpf_linker()?;
    debian_packages()?;
    Ok(())
}

fn already_present(step: &str) {
    eprintln!("{step}: ok (already present)");
}

fn installing(step: &str) {
    eprintln!("{step}: installing ...");
}

fn rustup_output(step: &str, args: &[&str]) -> Result<String> {
    let mut command = Command::new("rustup");
    command.args(args);
    probe(&mut command).ok_or_else(|| {
        anyhow!(
            "{step}: `{}` failed; is rustup installed and on PATH?",
            render(&command)
        )
    })
}

fn nightly_toolchain() -> Result<()> {
    const STEP: &str = "setup: nightly toolchain";
    let list = rustup_output(STEP, &["toolchain", "list"])?;
    if !has_nightly(&list) {
        bail!("{STEP}: no nightly toolchain: run `rustup toolchain install nightly`");
    }
    already_present(STEP);
    Ok(())
}

/// Whether `rustup toolchain list` output has the undated `nightly` toolchain that `+nightly` picks.
fn has_nightly(list: &str) -> bool {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| match name.strip_prefix("nightly") {
            Some("") => true,
            // `nightly-<host triple>` is the channel; `nightly-2025-01-01-...` is a pinned date.
            Some(rest) => rest
                .strip_prefix('-')
                .and_then(|r| r.chars().next())
                .is_some_and(|c| !c.is_ascii_digit()),
            None => false,
        })
}

/// Whether `rustup component list --installed` output contains `component`.
fn has_component(list: &str, component: &str) -> bool {
    list.lines().map(str::trim).any(|line| {
        line == component
            || line
                .strip_prefix(component)
                .is_some_and(|rest| rest.starts_with('-'))
    })
}

fn rust_src() -> Result<()> {
    // The BPF target has no prebuilt std, so core is built from source with nightly.
    const STEP: &str = "setup: rust-src";
    let list = rustup_output(
        STEP,
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )?;
    if has_component(&list, "rust-src") {
        already_present(STEP);
        return Ok(());
    }
    installing(STEP);
    cmd::run(
        STEP,
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
    )
}

fn lint_components() -> Result<()> {
    // `cargo xtask test` runs rustfmt and clippy with the active toolchain; minimal profiles lack them.
    const STEP: &str = "setup: rustfmt+clippy";
    let list = rustup_output(STEP, &["component", "list", "--installed"])?;
    let missing: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|c| !has_component(&list, c))
        .collect();
    if missing.is_empty() {
        already_present(STEP);
        return Ok(());
    }
    installing(STEP);
    cmd::run(
        STEP,
        Command::new("rustup")
            .args(["component", "add"])
            .args(&missing),
    )
}

fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Some(PathBuf::from(home).join("bin"));
    }
    env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin"))
}

/// Whether `bpf-linker --version` output names a 0.13 release.
fn is_wanted_linker(version_output: &str) -> bool {
    version_output
        .split_whitespace()
        .nth(1)
        .is_some_and(|v| v.starts_with("0.13."))
}

/// Finds a working bpf-linker 0.13: `Some(true)` on PATH, `Some(false)` only in cargo's bin dir.
fn find_bpf_linker() -> Option<bool> {
    let works = |program: &Path| {
        probe(Command::new(program).arg("--version")).is_some_and(|out| is_wanted_linker(&out))
    };
    if works(Path::new("bpf-linker")) {
        return Some(true);
    }
    cargo_bin_dir()
        .is_some_and(|dir| works(&dir.join("bpf-linker")))
        .then_some(false)
}

/// Extracts the LLVM major version from a file name like `libLLVM.so.22.1-rust-1.97.0-nightly`.
fn llvm_major(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix("libLLVM.so.")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn bpf_linker() -> Result<()> {
    const STEP: &str = "setup: bpf-linker 0.13";
    match find_bpf_linker() {
        Some(true) => {
            already_present(STEP);
            return Ok(());
        }
        Some(false) => {
            already_present(STEP);
            eprintln!("{STEP}: note: it is not on PATH; add cargo's bin directory to PATH");
            return Ok(());
        }
        None => {}
    }
    installing(STEP);

    // Link against the LLVM shipped inside the nightly toolchain so that bpf-linker and rustc
    // agree on the bitcode format, without needing a system LLVM of the same version.
    let mut sysroot_cmd = Command::new("rustc");
    sysroot_cmd.args(["+nightly", "--print", "sysroot"]);
    let sysroot = probe(&mut sysroot_cmd)
        .map(|s| PathBuf::from(s.trim()))
        .ok_or_else(|| anyhow!("{STEP}: `{}` failed", render(&sysroot_cmd)))?;
    let lib_dir = sysroot.join("lib");
    let lib = find_libllvm(&lib_dir).with_context(|| STEP)?;
    let major = llvm_major(&lib)
        .ok_or_else(|| anyhow!("{STEP}: cannot read the LLVM version from {lib:?}"))?;
    let lib_dir = lib_dir.display();
    let rustflags =
        format!("-L native={lib_dir} -C link-arg=-l:{lib} -C link-arg=-Wl,-rpath,{lib_dir}");

    let mut install = Command::new("cargo");
    install
        .args([
            "+nightly",
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        ])
        // --force: a stale binary (e.g. its libLLVM went away with a nightly update) must be
        // replaced, and cargo would otherwise skip an "already installed" version.
        .args(["--locked", "--force", "--no-default-features", "--features"])
        .arg(format!("llvm-{major},no-llvm-linking"))
        .env("RUSTFLAGS", &rustflags)
        // This one would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd::run(STEP, &mut install)?;

    if find_bpf_linker().is_none() {
        bail!(
            "{STEP}: installed, but `bpf-linker --version` still does not report {BPF_LINKER_VERSION}"
        );
    }
    Ok(())
}

/// Returns the name of the single `libLLVM.so.*` file in `lib_dir`.
fn find_libllvm(lib_dir: &Path) -> Result<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(lib_dir).with_context(|| format!("reading {}", lib_dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM.so.") {
            found.push(name);
        }
    }
    match <[String; 1]>::try_from(found) {
        Ok([name]) => Ok(name),
        Err(found) => bail!(
            "expected exactly one libLLVM.so.* in {}, found {found:?}",
            lib_dir.display()
        ),
    }
}

/// Returns the packages of `wanted` that a `dpkg-query -f '${Package} ${Status}\n'` run
/// does not report as fully installed.
fn missing_packages<'a>(wanted: &[&'a str], dpkg_output: &str) -> Vec<&'a str> {
    let installed: HashSet<&str> = dpkg_output
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, status)| status.trim() == "install ok installed")
        .map(|(name, _)| name)
        .collect();
    wanted
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect()
}

fn debian_packages() -> Result<()> {
    const STEP: &str = "setup: debian packages";
    // One query for all packages; it exits non-zero when some are unknown, which is fine here.
    let mut query = Command::new("dpkg-query");
    query
        .args(["-W", "-f", "${Package} ${Status}\n"])
        .args(PACKAGES);
    let output = probe_any_status(&mut query).ok_or_else(|| {
        anyhow!(
            "{STEP}: `dpkg-query` is not available (Debian/Ubuntu only); install by hand: {}",
            PACKAGES.join(" ")
        )
    })?;
    let missing = missing_packages(PACKAGES, &output);
    if missing.is_empty() {
        already_present(STEP);
        return Ok(());
    }

    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    if !is_root() {
        bail!(
            "{STEP}: setup needs root to install Debian packages: run as root or `sudo {}` (missing: {})",
            render(&install),
            missing.join(" ")
        );
    }
    eprintln!("{STEP}: installing ... ({})", missing.join(" "));
    cmd::run(
        STEP,
        Command::new("apt-get").arg("update").stdin(Stdio::null()),
    )?;
    cmd::run(STEP, &mut install)?;

    for service in SERVICES.iter().filter(|s| missing.contains(s)) {
        stop_service(service);
    }
    Ok(())
}

/// Stops and disables a distro service the package install may have started; failures are
/// expected (no init system in containers) and ignored.
fn stop_service(name: &str) {
    // Only the distro service is touched: tests may be running their own nginx/haproxy.
    for args in [["service", name, "stop"], ["systemctl", "disable", name]] {
        let mut command = Command::new(args[0]);
        command.args(&args[1..]).stdin(Stdio::null());
        eprintln!("+ {} (failures ignored)", render(&command));
        let _ = command.status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rust_lib_names() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major("libLLVM.so.19.1-rust-1.84.0-nightly"), Some(19));
        assert_eq!(llvm_major("libLLVM.so.20"), Some(20));
    }

    #[test]
    fn llvm_major_rejects_other_names() {
        assert_eq!(llvm_major("libLLVM-22-rust-1.97.0-nightly.so"), None);
        assert_eq!(llvm_major("libLLVM.so."), None);
        assert_eq!(llvm_major("libLLVM.so.x"), None);
    }

    #[test]
    fn nightly_detection() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n";
        assert!(has_nightly(list));
        assert!(has_nightly("nightly\n"));
        assert!(!has_nightly(
            "stable-x86_64-unknown-linux-gnu (default)\n\
             nightly-2025-01-01-x86_64-unknown-linux-gnu\n"
        ));
        assert!(!has_nightly("no installed toolchains\n"));
    }

    #[test]
    fn component_detection() {
        let list = "cargo-x86_64-unknown-linux-gnu\nrust-src\nrustfmt-x86_64-unknown-linux-gnu\n";
        assert!(has_component(list, "rust-src"));
        assert!(has_component(list, "rustfmt"));
        assert!(!has_component(list, "clippy"));
        assert!(!has_component(
            "rust-std-x86_64-unknown-linux-gnu\n",
            "rust-src"
        ));
    }

    #[test]
    fn linker_version_check() {
        assert!(is_wanted_linker("bpf-linker 0.13.0\n"));
        assert!(is_wanted_linker("bpf-linker 0.13.2"));
        assert!(!is_wanted_linker("bpf-linker 0.9.13"));
        assert!(!is_wanted_linker("bpf-linker 10.13.0"));
        assert!(!is_wanted_linker(""));
    }

    #[test]
    fn missing_packages_from_dpkg_output() {
        let out = "curl install ok installed\n\
                   nginx deinstall ok config-files\n\
                   wrk install ok installed\n";
        assert_eq!(
            missing_packages(&["curl", "nginx", "wrk", "tmux"], out),
            vec!["nginx", "tmux"]
        );
        assert!(missing_packages(&["curl"], out).is_empty());
    }
}
