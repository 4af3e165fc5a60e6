pub use s3s;
