//! loci-dataplane (grows with later issues).
