(* The creation record of the bindings without altp2m and vmtrace fields
   (stable-4.17), filled as xenopsd's VM_create fills it for a PV guest
   without devices. *)

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
    cpupool_id;
    node_affinity;
    arch = X86 { emulation_flags = []; misc_flags = [] };
  }
