//! loci-core (grows with later issues).
