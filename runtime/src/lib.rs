//! berth's engine, modelled on LXC's `lxcapi_create`, `lxcapi_start`,
//! `__lxc_start` and `lxc_spawn`: create, start, monitor, reboot, stop, destroy.
//! Empty until the create issue lands.
