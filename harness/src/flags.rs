//! Command line of `cargo xtask`.

use std::path::PathBuf;

use crate::patch::Flavor;
use crate::test_plan::Shard;

xflags::xflags! {
    /// Build Xen with and without the NUMA placement series, boot it under
    /// QEMU with emulated NUMA nodes and report where domains landed.
    ///
    /// Every command works on one base (a pinned Xen source with its own
    /// series, `xen/bases/<name>.yaml`): `--base NAME` or a path to such a
    /// file, the default base (master) otherwise. `--xen-sources DIR` (or
    /// NUMA_HARNESS_XEN_SOURCES) names a directory of source tarballs to
    /// take the base's source from before Debian and upstream git.
    /// `--xen-tree DIR` builds and boots a Xen checkout as it stands as the
    /// patched side, beside the base's pinned baseline.
    cmd xtask {
        /// Check the host's tools and Debian packages; install what is
        /// missing (as root) or print the command that would.
        cmd setup {}

        /// Download a base's pinned Xen source, the dom0 kernel and busybox
        /// into the cache, verified.
        cmd fetch {
            /// A base name or file (default: the default base).
            optional --base base: String
            /// A directory of Xen source tarballs.
            optional --xen-sources dir: PathBuf
        }

        /// Apply the base's series and build hypervisor and tools.
        cmd build {
            optional --base base: String
            /// `baseline` or `patched` (default: both).
            optional --build build: Flavor
            optional --xen-sources dir: PathBuf
            /// A Xen checkout to build as the patched side.
            optional --xen-tree dir: PathBuf
        }

        /// Check a base's patch series as upstream review would: form, cover
        /// letter, `git am` on the base, and every patch building the
        /// x86_64 and arm64 hypervisor (and the tools where it touches them).
        cmd check-series {
            /// A base name or file (default: every base).
            optional --base base: String
            optional --xen-sources dir: PathBuf
        }

        /// Build the dom0 initramfs for a build.
        cmd image {
            optional --base base: String
            /// `baseline` or `patched` (default).
            optional --build build: Flavor
            optional --xen-sources dir: PathBuf
            optional --xen-tree dir: PathBuf
        }

        /// Boot one build with one topology and scenario, print its report.
        cmd boot {
            optional --base base: String
            /// `baseline` or `patched` (default).
            optional --build build: Flavor
            /// Topology file (default: qemu-images/topologies/two-node.yaml).
            optional --topology topology: PathBuf
            /// Scenario file (default: qemu-images/scenarios/default.yaml).
            optional --scenario scenario: PathBuf
            /// Run the scenario, then give a dom0 shell on this terminal.
            optional --interactive
            /// Print the QEMU command line and exit without booting.
            optional --print-command
            /// Multiply every boot timeout by this factor.
            optional --timeout-scale scale: f64
            optional --xen-sources dir: PathBuf
            optional --xen-tree dir: PathBuf
        }

        /// The main job: build both, boot the default topology and scenario
        /// on each, print the reports side by side and write them as YAML.
        default cmd run {
            optional --base base: String
            /// Topology file (default: qemu-images/topologies/two-node.yaml).
            optional --topology topology: PathBuf
            /// Scenario file (default: qemu-images/scenarios/default.yaml).
            optional --scenario scenario: PathBuf
            /// Multiply every boot timeout by this factor.
            optional --timeout-scale scale: f64
            optional --xen-sources dir: PathBuf
            optional --xen-tree dir: PathBuf
        }

        /// Run the tests: the harness's unit tests, the CI files' linters,
        /// then for every base (or `--base`) its series check and every
        /// scenario on every topology on both builds, each report compared
        /// with its snapshot; then the ways to get a source (upstream git,
        /// a contributor's checkout), built and booted for real.
        ///
        /// Tests are named like `master/two-node/default/patched`,
        /// `master/series`, `master/source/own-tree`, `unit`, `lint`; with
        /// filters, only the tests whose name contains one of them run
        /// (`cargo xtask test two-node/default` or `test default`).
        cmd test {
            /// Run only the tests whose name contains one of these.
            repeated filter: String
            /// A filter must equal the whole name, not a part of it.
            optional --exact
            /// Leave out the tests whose name contains this (equals it,
            /// with `--exact`), whatever the filters say; may be repeated.
            repeated --skip skip: String
            /// Print the names of the tests that would run, and exit.
            optional --list
            /// Run the `i`-th of `n` deterministic parts of the tests
            /// (`--shard 2/4`), for CI machines that split the work: the
            /// parts are balanced by what each test costs, and the boots
            /// that share a host stay in one part.
            optional --shard shard: Shard
            /// Write the results as JUnit XML to this file.
            optional --junit file: PathBuf
            /// How many boots run at once (default: what the machine's
            /// CPUs and memory allow; also NUMA_HARNESS_JOBS).
            optional -j, --jobs jobs: usize
            /// Boot every boot again, even those whose every input is the
            /// same as an earlier boot's (whose console is otherwise read
            /// again from the cache).
            optional --rerun
            /// Only the harness's unit tests (no Xen build, no boot).
            optional --unit-only
            /// A base name or file (default: every base).
            optional --base base: String
            /// Multiply every boot timeout by this factor.
            optional --timeout-scale scale: f64
            optional --xen-sources dir: PathBuf
        }

        /// Measure what a reviewer of the series asks (where each domain's
        /// structures land, and what creating a domain costs in time and
        /// Xen memory, baseline beside patched) on every topology with
        /// every scenario that places domains or measures cost, and write
        /// it as Markdown and SVG pictures under docs/evidence/.
        cmd evidence {
            /// A base name or file (default: the default base).
            optional --base base: String
            /// How many boots run at once (as for `test`).
            optional -j, --jobs jobs: usize
            /// Boot every boot again rather than read the console of an
            /// identical earlier boot.
            optional --rerun
            /// Multiply every boot timeout by this factor.
            optional --timeout-scale scale: f64
            optional --xen-sources dir: PathBuf
        }
    }
}
