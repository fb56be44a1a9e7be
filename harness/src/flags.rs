//! Command line of `cargo xtask`.

use std::path::PathBuf;

xflags::xflags! {
    /// Build Xen with and without the NUMA placement series, boot it under
    /// QEMU with emulated NUMA nodes and report where domains landed.
    cmd xtask {
        /// Check the host's tools and Debian packages; install what is
        /// missing (as root) or print the command that would.
        cmd setup {}

        /// Download the pinned Xen source, the dom0 kernel and busybox into
        /// the cache, verified by checksum.
        cmd fetch {}

        /// Apply patches/series and build hypervisor and tools.
        cmd build {
            /// `baseline`, `patched` or `all` (default).
            optional --build build: String
        }

        /// Check the patch series as upstream review would: form, cover
        /// letter, `git am` on the base, and every patch building the
        /// x86_64 and arm64 hypervisor (and the tools where it touches them).
        cmd check-series {}

        /// Build the dom0 initramfs for a build.
        cmd image {
            /// `baseline` or `patched` (default).
            optional --build build: String
        }

        /// Boot one build with one topology and scenario, print its report.
        cmd boot {
            /// `baseline` or `patched` (default).
            optional --build build: String
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
        }

        /// The main job: build both, boot the default topology and scenario
        /// on each, print the reports side by side and write them as YAML.
        default cmd run {
            /// Topology file (default: qemu-images/topologies/two-node.yaml).
            optional --topology topology: PathBuf
            /// Scenario file (default: qemu-images/scenarios/default.yaml).
            optional --scenario scenario: PathBuf
            /// Multiply every boot timeout by this factor.
            optional --timeout-scale scale: f64
        }

        /// Run the harness's unit tests, then every scenario on every
        /// topology on both builds, comparing each report with its snapshot.
        cmd test {
            /// Only the harness's unit tests (no Xen build, no boot).
            optional --unit-only
            /// Multiply every boot timeout by this factor.
            optional --timeout-scale scale: f64
        }
    }
}
