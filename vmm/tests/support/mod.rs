pub mod virtq;
