//! loci-sim (grows with later issues).
