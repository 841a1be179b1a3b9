pub use span_marker;
