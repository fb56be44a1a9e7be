(* The creation record of the bindings that carry altp2m and vmtrace
   fields (upstream master), filled as xenopsd's VM_create fills it for a
   PV guest without devices. *)

let make ~handle ~max_vcpus ~cpupool_id ~node_affinity : Xenctrl.domctl_create_config =
  {
    ssidref = 0l;
    handle;
    flags = [];
    iommu_opts = [];
    max_vcpus;
    max_evtchn_port = 1023;
    max_grant_frames = 64;
    max_maptrack_frames = 1024;
    max_grant_version = 1;
    altp2m_opts = 0l;
    altp2m_count = 0l;
    vmtrace_buf_kb = 0l;
    cpupool_id;
    node_affinity;
    arch = X86 { emulation_flags = []; misc_flags = [] };
  }
