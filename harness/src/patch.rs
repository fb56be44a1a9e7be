//! Patch stage: a base's series (`patches/<base>/series`) and applying it
//! to a work tree with `git am`.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The two builds the harness compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// The pinned base plus only the patches the series marks `baseline`
    /// (the instrument that makes placement visible).
    Baseline,
    /// The pinned base plus the whole series.
    Patched,
}

impl Flavor {
    pub const ALL: [Flavor; 2] = [Flavor::Baseline, Flavor::Patched];

    pub fn name(self) -> &'static str {
        match self {
            Flavor::Baseline => "baseline",
            Flavor::Patched => "patched",
        }
    }

    pub fn parse(s: &str) -> Result<Flavor> {
        match s {
            "baseline" => Ok(Flavor::Baseline),
            "patched" => Ok(Flavor::Patched),
            _ => bail!("unknown build {s:?}: expected `baseline` or `patched`"),
        }
    }
}

impl std::str::FromStr for Flavor {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Flavor> {
        Flavor::parse(s)
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    pub path: PathBuf,
    pub baseline: bool,
}

impl Patch {
    pub fn name(&self) -> String {
        self.path.file_name().unwrap().to_string_lossy().into_owned()
    }
}

/// A patch's text as far as the tree it makes goes: its subject's place in
/// the series (`[PATCH 03/17]`, `[PATCH v2 3/9]`) reads `[PATCH]`,
/// `[PATCH v2]`. Cache keys take this, so that adding a patch to a series
/// and renumbering the others does not rebuild them.
pub fn unnumbered(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut done = false;
    for line in text.split_inclusive('\n') {
        if let (false, Some(rest)) = (done, line.strip_prefix("Subject: [")) {
            done = true;
            if let Some((tag, subject)) = rest.split_once(']') {
                let words: Vec<&str> = tag.split(' ').collect();
                let numbered = |w: &str| {
                    w.split_once('/').is_some_and(|(a, b)| {
                        [a, b].iter().all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                    })
                };
                if words.len() > 1 && numbered(words[words.len() - 1]) {
                    out.push_str("Subject: [");
                    out.push_str(&words[..words.len() - 1].join(" "));
                    out.push(']');
                    out.push_str(subject);
                    continue;
                }
            }
        }
        out.push_str(line);
    }
    out
}

/// A series file: one patch file per line, in order, relative to the
/// series file. A line may end in the word `baseline` to give that patch to
/// the baseline build too. `#` starts a comment.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub patches: Vec<Patch>,
    /// The directory the series file is in (with its cover letter).
    pub dir: PathBuf,
}

impl Series {
    pub fn load(path: &Path) -> Result<Series> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the patch series {}", path.display()))?;
        Series::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Series> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut patches = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap().trim();
            if line.is_empty() {
                continue;
            }
            let at = || format!("{}:{}", path.display(), i + 1);
            let mut words = line.split_whitespace();
            let file = dir.join(words.next().unwrap());
            let mut baseline = false;
            for word in words {
                match word {
                    "baseline" => baseline = true,
                    _ => bail!("{}: unknown marker {word:?} (the only one is `baseline`)", at()),
                }
            }
            if !file.is_file() {
                bail!("{}: patch {} does not exist", at(), file.display());
            }
            if patches.iter().any(|p: &Patch| p.path == file) {
                bail!("{}: {} is listed twice", at(), file.display());
            }
            if baseline && patches.iter().any(|p: &Patch| !p.baseline) {
                bail!(
                    "{}: a baseline patch must come before every patch that is not: \
                     the baseline build applies a prefix of the series",
                    at()
                );
            }
            patches.push(Patch { path: file, baseline });
        }
        Ok(Series { patches, dir: dir.to_path_buf() })
    }

    /// The patches a build applies, in order.
    pub fn for_flavor(&self, flavor: Flavor) -> Vec<&Patch> {
        self.patches
            .iter()
            .filter(|p| flavor == Flavor::Patched || p.baseline)
            .collect()
    }
}

/// Applies `patches` one by one with `git am` on top of the current HEAD of
/// `tree`. A patch that does not apply is an error naming it; the tree is left
/// clean (the failed `git am` is aborted).
pub fn apply(sh: &Shell, tree: &Path, patches: &[&Patch]) -> Result<()> {
    let _cd = sh.push_dir(tree);
    for patch in patches {
        let file = &patch.path;
        let out = cmd!(sh, "git -c user.name=numa-harness -c user.email=numa-harness@localhost am --3way --whitespace=nowarn {file}")
            .quiet()
            .ignore_status()
            .output()?;
        if !out.status.success() {
            let _ = cmd!(sh, "git am --abort").quiet().ignore_status().ignore_stderr().run();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
            let why: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with("hint:") && !l.trim().is_empty())
                .take(12)
                .collect();
            bail!(
                "patch {} does not apply with `git am`:\n    {}\nrefresh it against the pinned base (xen/bases/) \
                 and the patches before it in its series",
                patch.name(),
                why.join("\n    ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        dir
    }

    #[test]
    fn unnumbered_drops_the_place_in_the_series_only() {
        let text = "From 1 Mon Sep 17 00:00:00 2001\nSubject: [PATCH 03/17] xen: a\n b\n\nWhy.\n\
                    Subject: [PATCH 1/2] stays: it is not the header\n";
        assert_eq!(
            unnumbered(text),
            "From 1 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] xen: a\n b\n\nWhy.\n\
             Subject: [PATCH 1/2] stays: it is not the header\n"
        );
        assert_eq!(unnumbered("Subject: [PATCH v2 3/9] x\n"), "Subject: [PATCH v2] x\n");
        assert_eq!(unnumbered(&unnumbered("Subject: [PATCH 3/9] x\n")), "Subject: [PATCH] x\n");
        for same in ["Subject: [PATCH] x\n", "Subject: [RFC 3/x] x\n", "Subject: no tag\n", ""] {
            assert_eq!(unnumbered(same), same);
        }
    }

    #[test]
    fn series_selects_baseline_prefix() {
        let dir = dir_with(&["a.patch", "b.patch"]);
        let path = dir.path().join("series");
        let s = Series::parse("# c\na.patch baseline\n\nb.patch # why\n", &path).unwrap();
        let names = |f| s.for_flavor(f).iter().map(|p| p.name()).collect::<Vec<_>>();
        assert_eq!(names(Flavor::Baseline), ["a.patch"]);
        assert_eq!(names(Flavor::Patched), ["a.patch", "b.patch"]);
    }

    #[test]
    fn series_errors_name_line() {
        let dir = dir_with(&["a.patch", "b.patch"]);
        let path = dir.path().join("series");
        let err = Series::parse("a.patch\nmissing.patch\n", &path).unwrap_err().to_string();
        assert!(err.contains("series:2: patch") && err.contains("does not exist"), "{err}");
        let err = Series::parse("a.patch basline\n", &path).unwrap_err().to_string();
        assert!(err.contains("series:1: unknown marker \"basline\""), "{err}");
        let err = Series::parse("a.patch\nb.patch baseline\n", &path).unwrap_err().to_string();
        assert!(err.contains("series:2: a baseline patch must come before"), "{err}");
    }

    /// A real `git am` of a patch that does not apply names the patch and
    /// leaves the tree as it was.
    #[test]
    fn broken_patch_is_named_and_aborted() {
        let sh = Shell::new().unwrap();
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        std::fs::write(t.join("file.c"), "int a;\n").unwrap();
        {
            let _cd = sh.push_dir(t);
            cmd!(sh, "git init -q").run().unwrap();
            cmd!(sh, "git add file.c").run().unwrap();
            cmd!(sh, "git -c user.name=t -c user.email=t@t commit -q -m base").run().unwrap();
        }
        let patches = tempfile::tempdir().unwrap();
        let p = patches.path().join("0001-xen-break.patch");
        std::fs::write(
            &p,
            "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n\
             From: A <a@a>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nSubject: [PATCH] xen: change b\n\n---\n\
             diff --git a/file.c b/file.c\n--- a/file.c\n+++ b/file.c\n@@ -1 +1 @@\n-int b;\n+int c;\n",
        )
        .unwrap();
        let patch = Patch { path: p, baseline: false };
        let err = apply(&sh, t, &[&patch]).unwrap_err().to_string();
        assert!(err.starts_with("patch 0001-xen-break.patch does not apply"), "{err}");
        assert_eq!(std::fs::read_to_string(t.join("file.c")).unwrap(), "int a;\n");
        assert!(!t.join(".git/rebase-apply").exists(), "git am was not aborted");
    }
}
