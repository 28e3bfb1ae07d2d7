//! berth's record of actual state and events, kept in sled.
//! Empty until the operator issue lands.
