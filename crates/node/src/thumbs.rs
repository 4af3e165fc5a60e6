//! Thumbnails: derived blobs made by queue workers after an upload, served
//! with `GET /v1/blobs/{key}?w=128`.
//!
//! A thumbnail of `key` at width `w` is stored as its own blob under
//! [`thumb_key`], in the original's format (PNG or JPEG), scaled to `w`
//! pixels wide with the aspect ratio kept (an image already narrower is
//! stored as it is, so every configured width exists once the job is done).

use std::io::Cursor;

use bytes::Bytes;
use image::{ImageFormat, ImageReader};

/// Most pixels of an image thumbnailed (decompression bombs are refused).
const MAX_PIXELS: u64 = 100_000_000;

/// The key a thumbnail of `key` at `width` is stored under.
pub fn thumb_key(key: &str, width: u32) -> String {
    format!("_thumbs/{width}/{key}")
}

/// A thumbnail of `data` at `width` pixels wide, with its content type;
/// `Ok(None)` when `data` is not a PNG or JPEG image.
pub fn make(data: &[u8], width: u32) -> Result<Option<(Bytes, &'static str)>, String> {
    let reader = ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let (format, ctype) = match reader.format() {
        Some(ImageFormat::Png) => (ImageFormat::Png, "image/png"),
        Some(ImageFormat::Jpeg) => (ImageFormat::Jpeg, "image/jpeg"),
        _ => return Ok(None),
    };
    let (w, h) = reader.into_dimensions().map_err(|e| e.to_string())?;
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!("{w}x{h} is over {MAX_PIXELS} pixels"));
    }
    let img = image::load_from_memory_with_format(data, format).map_err(|e| e.to_string())?;
    let img = if w > width {
        let height = ((u64::from(h) * u64::from(width)) / u64::from(w)).max(1) as u32;
        img.thumbnail(width, height)
    } else {
        img
    };
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).map_err(|e| e.to_string())?;
    Ok(Some((Bytes::from(out.into_inner()), ctype)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).expect("encode");
        out.into_inner()
    }

    #[test]
    fn scales_to_the_width_keeping_the_aspect_ratio() {
        let (t, ct) = make(&png(1024, 512), 128).expect("ok").expect("image");
        assert_eq!(ct, "image/png");
        let img = image::load_from_memory(&t).expect("decode");
        assert_eq!((img.width(), img.height()), (128, 64));
        // Narrower than asked: kept as it is.
        let (t, _) = make(&png(100, 50), 512).expect("ok").expect("image");
        assert_eq!(image::load_from_memory(&t).expect("decode").width(), 100);
        // Not an image: nothing to do; a broken image: an error.
        assert!(make(b"plain text", 128).expect("ok").is_none());
        let mut broken = png(64, 64);
        broken.truncate(60);
        assert!(make(&broken, 32).is_err());
    }
}
