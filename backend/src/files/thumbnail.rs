//! Thumbnails of uploaded images (PNG, JPEG, GIF's first frame, WebP): decoded within limits
//! on the input's size, the image's dimensions and the decoder's memory, so that a
//! decompression bomb (a small file that claims a huge image) is refused before anything of
//! its claimed size is allocated; scaled down to fit a box (never up), its EXIF orientation
//! applied; encoded as JPEG, or PNG when it has transparency.
//!
//! [`make`] is CPU-bound (tens of milliseconds for a phone photo): the caller runs it on a
//! blocking thread (`tokio::task::spawn_blocking`), never on a runtime worker.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::error::LimitErrorKind;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};
use serde::{Deserialize, Serialize};

/// How thumbnails are made (`[files.thumbnail]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThumbnailConfig {
    /// Images larger than this many bytes get no thumbnail.
    pub source_bytes_max: usize,
    /// Images wider or taller than this many pixels get no thumbnail (checked from the header,
    /// before decoding).
    pub source_side_max_px: u32,
    /// Memory the decoder may allocate for one image, in bytes (4 per pixel for RGBA: 256 MiB
    /// is 64 megapixels).
    pub decode_bytes_max: u64,
    /// The box the thumbnail fits in, in pixels.
    pub box_width_px: u32,
    pub box_height_px: u32,
    /// JPEG quality, 1 to 100.
    pub jpeg_quality: u8,
}

impl Default for ThumbnailConfig {
    fn default() -> Self {
        Self {
            source_bytes_max: 32 << 20,
            source_side_max_px: 16_384,
            decode_bytes_max: 256 << 20,
            box_width_px: 320,
            box_height_px: 320,
            jpeg_quality: 80,
        }
    }
}

impl ThumbnailConfig {
    /// Every problem of the section, as `key: problem` lines (`section` names it, e.g.
    /// `files.thumbnail`).
    pub fn problems(&self, section: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.source_bytes_max == 0 {
            out.push(format!("{section}.source_bytes_max: must be at least 1"));
        }
        if !(1..=65_535).contains(&self.source_side_max_px) {
            out.push(format!(
                "{section}.source_side_max_px: must be between 1 and 65535"
            ));
        }
        if !(1u64 << 20..=4u64 << 30).contains(&self.decode_bytes_max) {
            out.push(format!(
                "{section}.decode_bytes_max: must be between 1 MiB and 4 GiB"
            ));
        }
        if !(1..=4096).contains(&self.box_width_px) || !(1..=4096).contains(&self.box_height_px) {
            out.push(format!(
                "{section}.box_width_px, box_height_px: must be between 1 and 4096"
            ));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            out.push(format!("{section}.jpeg_quality: must be between 1 and 100"));
        }
        out
    }
}

/// A thumbnail: the encoded bytes and what they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    /// `image/jpeg` or `image/png`.
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
}

/// Why no thumbnail was made. Each is final for the file: retrying gives the same answer.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("the image is {size} bytes, more than the {max} bytes thumbnails are made from")]
    InputTooLarge { size: usize, max: usize },
    #[error("not an image in a supported format (PNG, JPEG, GIF, WebP)")]
    NotAnImage,
    #[error("the image's dimensions exceed {max}×{max} pixels")]
    TooManyPixels { max: u32 },
    #[error("decoding the image would take more than {max} bytes of memory")]
    TooMuchMemory { max: u64 },
    #[error("the image is damaged: {0}")]
    Damaged(String),
    #[error("encoding the thumbnail failed: {0}")]
    Encode(String),
}

/// The thumbnail of the image in `bytes`. Blocking: see the module's doc.
pub fn make(bytes: &[u8], config: &ThumbnailConfig) -> Result<Thumbnail, ThumbnailError> {
    if bytes.len() > config.source_bytes_max {
        return Err(ThumbnailError::InputTooLarge {
            size: bytes.len(),
            max: config.source_bytes_max,
        });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| ThumbnailError::NotAnImage)?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP) => {}
        _ => return Err(ThumbnailError::NotAnImage),
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(config.source_side_max_px);
    limits.max_image_height = Some(config.source_side_max_px);
    limits.max_alloc = Some(config.decode_bytes_max);
    reader.limits(limits.clone());
    let refused = |e: ImageError| refusal(e, config);
    // The header only: the dimensions are checked against the limits here.
    let mut decoder = reader.into_decoder().map_err(refused)?;
    // The decoded image's own buffer, which `into_decoder` does not count.
    limits.reserve(decoder.total_bytes()).map_err(refused)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(refused)?;
    // Scaled first, turned upright after: turning the full image copies it whole (a second
    // buffer of its size, outside `decode_bytes_max`); the thumbnail is small. An orientation
    // that turns the image a quarter swaps the box's sides for the scaling.
    let (box_w, box_h) = match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (config.box_height_px, config.box_width_px),
        _ => (config.box_width_px, config.box_height_px),
    };
    if image.width() > box_w || image.height() > box_h {
        image = image.thumbnail(box_w, box_h);
    }
    image.apply_orientation(orientation);
    let (width, height) = (image.width(), image.height());
    let mut out = Vec::new();
    let mime = if image.color().has_alpha() {
        DynamicImage::ImageRgba8(image.to_rgba8())
            .write_with_encoder(PngEncoder::new(&mut out))
            .map_err(|e| ThumbnailError::Encode(e.to_string()))?;
        "image/png"
    } else {
        DynamicImage::ImageRgb8(image.to_rgb8())
            .write_with_encoder(JpegEncoder::new_with_quality(&mut out, config.jpeg_quality))
            .map_err(|e| ThumbnailError::Encode(e.to_string()))?;
        "image/jpeg"
    };
    Ok(Thumbnail {
        bytes: out,
        mime,
        width,
        height,
    })
}

fn refusal(e: ImageError, config: &ThumbnailConfig) -> ThumbnailError {
    match e {
        ImageError::Limits(l) => match l.kind() {
            LimitErrorKind::DimensionError => ThumbnailError::TooManyPixels {
                max: config.source_side_max_px,
            },
            _ => ThumbnailError::TooMuchMemory {
                max: config.decode_bytes_max,
            },
        },
        ImageError::Unsupported(_) => ThumbnailError::NotAnImage,
        e => ThumbnailError::Damaged(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
