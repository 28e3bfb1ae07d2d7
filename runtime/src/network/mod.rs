pub mod nat;
