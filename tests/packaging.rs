//! Packaging inputs that need no package build: the systemd units pass `systemd-analyze
//! verify` without a word on stderr and score at most 2.0 in `systemd-analyze security`,
//! the shipped config validates, the .deb and .rpm metadata in Cargo.toml agree, and the
//! packaging scripts are shellcheck-clean. packaging/system-test builds and installs the
//! packages themselves.

// clippy's allow-unwrap-in-tests covers #[test] functions only, not the helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SYSTEMD_MISSING: &str =
    "systemd-analyze missing: run 'apt-get install -y --no-install-recommends systemd'";
const SHELLCHECK_MISSING: &str =
    "shellcheck missing: run 'apt-get install -y --no-install-recommends shellcheck'";

/// The highest `systemd-analyze security` exposure the unit may have.
const MAX_EXPOSURE: f64 = 2.0;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command, missing: &str) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{missing}"),
        Err(e) => panic!("{cmd:?}: {e}"),
    }
}

/// Unit files under systemd/.
fn units() -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = fs::read_dir(repo().join("systemd"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                matches!(
                    e,
                    "service" | "socket" | "timer" | "path" | "target" | "mount"
                )
            })
        })
        .collect();
    units.sort();
    assert!(!units.is_empty(), "no units under systemd/");
    units
}

/// A copy of `unit` in a temp dir whose ExecStart= runs the binary this build made, so
/// verify can check it exists; with `drop_in`, also `<unit>.d/<drop_in's name>`.
fn staged_unit(unit: &Path, drop_in: Option<&Path>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let name = unit.file_name().unwrap();
    let text = fs::read_to_string(unit).unwrap().replace(
        "/usr/libexec/leafd ",
        &format!("{} ", env!("CARGO_BIN_EXE_leafd")),
    );
    let path = dir.path().join(name);
    fs::write(&path, text).unwrap();
    if let Some(d) = drop_in {
        let dropins = dir.path().join(format!("{}.d", name.to_string_lossy()));
        fs::create_dir(&dropins).unwrap();
        fs::copy(d, dropins.join(d.file_name().unwrap())).unwrap();
    }
    (dir, path)
}

fn verify(unit: &Path) {
    let out = run(
        Command::new("systemd-analyze").arg("verify").arg(unit),
        SYSTEMD_MISSING,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "systemd-analyze verify {}: {}\n{stderr}",
        unit.display(),
        out.status
    );
}

#[test]
fn units_verify_without_warnings() {
    for unit in units() {
        let (_dir, staged) = staged_unit(&unit, None);
        verify(&staged);
    }
}

#[test]
fn unit_with_the_documented_drop_in_verifies_without_warnings() {
    let drop_in = repo().join("systemd/examples/kafka-tls.conf");
    let (_dir, staged) = staged_unit(&repo().join("systemd/leafd.service"), Some(&drop_in));
    verify(&staged);
}

#[test]
fn unit_exposure_is_at_most_two() {
    let (_dir, staged) = staged_unit(&repo().join("systemd/leafd.service"), None);
    let out = run(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&staged),
        SYSTEMD_MISSING,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let marker = "Overall exposure level for leafd.service: ";
    let score: f64 = stdout
        .lines()
        .find_map(|l| l.split_once(marker))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{stdout}"));
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{stdout}"
    );
    // The directives the unit promises, so a later edit cannot drop one unnoticed.
    let unit = fs::read_to_string(repo().join("systemd/leafd.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=2min",
        "User=leafd",
        "SupplementaryGroups=tss",
        "StateDirectory=leafd",
        "ConfigurationDirectory=leafd",
        "DevicePolicy=closed",
        "DeviceAllow=/dev/tpmrm0 rw",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "RestartPreventExitStatus=78",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }
}

#[test]
fn shipped_config_validates() {
    let out = Command::new(env!("CARGO_BIN_EXE_leafctl"))
        .args(["validate", "-c"])
        .arg(repo().join("etc/leafd/leafd.toml"))
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "leafctl validate: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 file, 0 identities"));
}

/// `(source, absolute destination path)` of every asset in one packager's list.
fn deb_assets(meta: &toml::Table) -> Vec<(String, String)> {
    let list = meta["deb"]["assets"].as_array().unwrap();
    list.iter()
        .map(|a| {
            let a = a.as_array().unwrap();
            let (src, dest) = (a[0].as_str().unwrap(), a[1].as_str().unwrap());
            let dest = if dest.ends_with('/') {
                format!(
                    "/{dest}{}",
                    Path::new(src).file_name().unwrap().to_string_lossy()
                )
            } else {
                format!("/{dest}")
            };
            (src.to_owned(), dest)
        })
        .collect()
}

fn rpm_assets(meta: &toml::Table) -> Vec<(String, String)> {
    let list = meta["generate-rpm"]["assets"].as_array().unwrap();
    list.iter()
        .map(|a| {
            let src = a["source"].as_str().unwrap().to_owned();
            let dest = a["dest"].as_str().unwrap().to_owned();
            (src, dest)
        })
        .collect()
}

fn package_metadata() -> toml::Table {
    let manifest: toml::Table = fs::read_to_string(repo().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    manifest["package"]["metadata"].as_table().unwrap().clone()
}

#[test]
fn deb_and_rpm_ship_the_same_files() {
    let meta = package_metadata();
    let mut deb = deb_assets(&meta);
    // cargo-deb adds the unit and the sysusers file from systemd-units.unit-scripts.
    deb.push((
        "systemd/leafd.service".into(),
        "/usr/lib/systemd/system/leafd.service".into(),
    ));
    deb.push((
        "systemd/leafd.sysusers".into(),
        "/usr/lib/sysusers.d/leafd.conf".into(),
    ));
    let mut rpm = rpm_assets(&meta);
    deb.sort();
    rpm.sort();
    assert_eq!(deb, rpm);
    for (src, _) in &rpm {
        if !src.starts_with("target/") {
            assert!(repo().join(src).is_file(), "asset {src} does not exist");
        }
    }
    let rpm_meta = meta["generate-rpm"].as_table().unwrap();
    for key in [
        "post_install_script",
        "pre_uninstall_script",
        "post_uninstall_script",
    ] {
        let script = rpm_meta[key].as_str().unwrap();
        assert!(repo().join(script).is_file(), "{key} {script} is missing");
    }
    let mut config: Vec<&str> = rpm_meta["assets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a.get("config").is_some())
        .map(|a| a["dest"].as_str().unwrap())
        .collect();
    config.sort();
    let in_etc: Vec<&str> = rpm
        .iter()
        .map(|(_, d)| d.as_str())
        .filter(|d| d.starts_with("/etc/"))
        .collect();
    assert_eq!(config, in_etc, "every file under /etc is %config");
}

#[test]
fn generated_variants_add_only_the_staged_tree() {
    let meta = package_metadata();
    let glob = "target/packages/gen/leafd/**/*";
    let deb = meta["deb"]["variants"]["generated"].as_table().unwrap();
    assert_eq!(deb["name"].as_str(), Some("leafd"));
    let appended = deb["merge-assets"]["append"].as_array().unwrap();
    assert_eq!(appended.len(), 1);
    let entry: Vec<&str> = appended[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(entry, [glob, "/", "644"]);
    // cargo-generate-rpm variants replace the asset list: it must repeat the base list.
    let base = meta["generate-rpm"]["assets"].as_array().unwrap();
    let variant = meta["generate-rpm"]["variants"]["generated"]["assets"]
        .as_array()
        .unwrap();
    assert_eq!(&variant[..base.len()], &base[..]);
    let staged = &variant[base.len()..];
    let dirs = ["man", "bash-completion", "zsh", "fish"];
    assert_eq!(staged.len(), dirs.len());
    for (entry, dir) in staged.iter().zip(dirs) {
        assert_eq!(
            entry["source"].as_str().unwrap(),
            format!("target/packages/gen/leafd/usr/share/{dir}/**/*")
        );
        assert_eq!(
            entry["dest"].as_str().unwrap(),
            format!("/usr/share/{dir}/")
        );
    }
    // rpmlint: man pages must be listed as documentation.
    assert_eq!(staged[0]["doc"].as_bool(), Some(true));
}

#[test]
fn packaging_scripts_are_shellcheck_clean() {
    let bash = ["packaging/build", "packaging/system-test", "tests/run"];
    let out = run(
        Command::new("shellcheck").current_dir(repo()).args(bash),
        SHELLCHECK_MISSING,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Maintainer scripts and RPM scriptlets run under /bin/sh.
    let mut sh: Vec<String> = vec!["packaging/deb/leafd.postrm".into()];
    for e in fs::read_dir(repo().join("packaging/rpm")).unwrap() {
        let p = e.unwrap().path();
        sh.push(p.strip_prefix(repo()).unwrap().display().to_string());
    }
    let out = run(
        Command::new("shellcheck")
            .current_dir(repo())
            .args(["--shell=sh"])
            .args(&sh),
        SHELLCHECK_MISSING,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
