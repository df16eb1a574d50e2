//! Merkle-tree anti-entropy (issue 3): per-partition trees over key digests, compared
//! between co-replicas so only differing keys are exchanged.
//!
//! Not implemented yet. Replicas converge today only through the writes that reach them;
//! read repair, hinted handoff and tree exchanges arrive with issue 3.
