use image::codecs::gif::GifEncoder;
use image::codecs::webp::WebPEncoder;
use image::{ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage};

use super::*;

/// A gradient, so that a scaled copy is not trivially uniform.
fn photo(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    })
}

fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// Decodes a thumbnail back: its real format and dimensions.
fn decoded(thumb: &Thumbnail) -> (ImageFormat, u32, u32) {
    let format = image::guess_format(&thumb.bytes).unwrap();
    let image = image::load_from_memory(&thumb.bytes).unwrap();
    (format, image.width(), image.height())
}

#[test]
fn a_png_photo_is_scaled_into_the_box_as_jpeg() {
    let png = encoded(&photo(1000, 500).into(), ImageFormat::Png);
    let thumb = make(&png, &ThumbnailConfig::default()).unwrap();
    assert_eq!(
        (thumb.width, thumb.height, thumb.mime),
        (320, 160, "image/jpeg")
    );
    assert_eq!(decoded(&thumb), (ImageFormat::Jpeg, 320, 160));
}

#[test]
fn a_tall_jpeg_keeps_its_aspect_ratio() {
    let jpeg = encoded(&photo(400, 1200).into(), ImageFormat::Jpeg);
    let thumb = make(&jpeg, &ThumbnailConfig::default()).unwrap();
    assert_eq!((thumb.width, thumb.height), (107, 320));
    assert_eq!(decoded(&thumb), (ImageFormat::Jpeg, 107, 320));
}

#[test]
fn a_configured_box() {
    let config = ThumbnailConfig {
        box_width_px: 64,
        box_height_px: 100,
        ..ThumbnailConfig::default()
    };
    let png = encoded(&photo(640, 480).into(), ImageFormat::Png);
    let thumb = make(&png, &config).unwrap();
    assert_eq!((thumb.width, thumb.height), (64, 48));
}

/// `jpeg` with an EXIF block saying how to turn it upright (`orientation`, 1 to 8), right
/// after its start-of-image marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u8) -> Vec<u8> {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "a JPEG");
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec(); // big-endian TIFF, first IFD at 8
    tiff.extend_from_slice(&[0, 1]); // one entry
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, orientation, 0, 0]); // SHORT
    tiff.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&u16::try_from(app1.len() + 2).unwrap().to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn a_turned_photo_is_scaled_into_the_box_upright() {
    let config = ThumbnailConfig {
        box_width_px: 320,
        box_height_px: 160,
        ..ThumbnailConfig::default()
    };
    let landscape = encoded(&photo(400, 200).into(), ImageFormat::Jpeg);
    // 6: stored sideways, turned a quarter clockwise to show: upright it is 200 x 400, which
    // fits the box as 80 x 160.
    let thumb = make(&with_exif_orientation(&landscape, 6), &config).unwrap();
    assert_eq!((thumb.width, thumb.height), (80, 160));
    assert_eq!(decoded(&thumb), (ImageFormat::Jpeg, 80, 160));
    // 3: half a turn, the sides stay.
    let thumb = make(&with_exif_orientation(&landscape, 3), &config).unwrap();
    assert_eq!((thumb.width, thumb.height), (320, 160));
}

#[test]
fn transparency_is_kept_as_png() {
    let image = RgbaImage::from_fn(600, 600, |x, _| Rgba([255, 0, 0, (x % 256) as u8]));
    let png = encoded(&image.into(), ImageFormat::Png);
    let thumb = make(&png, &ThumbnailConfig::default()).unwrap();
    assert_eq!(thumb.mime, "image/png");
    assert_eq!(decoded(&thumb), (ImageFormat::Png, 320, 320));
    assert!(
        image::load_from_memory(&thumb.bytes)
            .unwrap()
            .color()
            .has_alpha()
    );
}

#[test]
fn a_small_image_is_not_scaled_up() {
    let png = encoded(&photo(50, 40).into(), ImageFormat::Png);
    let thumb = make(&png, &ThumbnailConfig::default()).unwrap();
    assert_eq!(decoded(&thumb), (ImageFormat::Jpeg, 50, 40));
}

#[test]
fn gif_and_webp() {
    let image = photo(800, 200);
    let mut gif = Vec::new();
    GifEncoder::new(&mut gif)
        .encode(image.as_raw(), 800, 200, image::ExtendedColorType::Rgb8)
        .unwrap();
    let thumb = make(&gif, &ThumbnailConfig::default()).unwrap();
    assert_eq!((thumb.width, thumb.height), (320, 80));

    let mut webp = Vec::new();
    WebPEncoder::new_lossless(&mut webp)
        .write_image(image.as_raw(), 800, 200, image::ExtendedColorType::Rgb8)
        .unwrap();
    assert_eq!(image::guess_format(&webp).unwrap(), ImageFormat::WebP);
    let thumb = make(&webp, &ThumbnailConfig::default()).unwrap();
    assert_eq!(decoded(&thumb), (ImageFormat::Jpeg, 320, 80));
}

/// CRC-32 (ISO-HDLC), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG of a few dozen bytes whose header claims `width`×`height` RGBA pixels (its pixel
/// data, a few zero bytes, ends far short of that).
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8 bits, RGBA, deflate, no filter, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    // zlib: a stored (uncompressed) final block of 4 zero bytes.
    chunk(
        &mut png,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, 0, 4, 0, 1,
        ],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn a_decompression_bomb_is_refused_before_it_is_allocated() {
    // 50,000 × 50,000 RGBA: 10 GB if it were allocated (the test process would die).
    let bomb = png_claiming(50_000, 50_000);
    assert!(bomb.len() < 100);
    let err = make(&bomb, &ThumbnailConfig::default()).unwrap_err();
    assert!(
        matches!(err, ThumbnailError::TooManyPixels { max: 16_384 }),
        "{err}"
    );
    assert!(err.to_string().contains("16384×16384"), "{err}");
    // Within the side limit but past the memory one: 16,000 × 16,000 RGBA is 1 GB.
    let err = make(&png_claiming(16_000, 16_000), &ThumbnailConfig::default()).unwrap_err();
    assert!(matches!(err, ThumbnailError::TooMuchMemory { .. }), "{err}");
}

#[test]
fn real_images_past_the_configured_limits_are_refused() {
    let png = encoded(&photo(1200, 300).into(), ImageFormat::Png);
    let narrow = ThumbnailConfig {
        source_side_max_px: 1000,
        ..ThumbnailConfig::default()
    };
    assert!(matches!(
        make(&png, &narrow),
        Err(ThumbnailError::TooManyPixels { max: 1000 })
    ));
    // 1200 × 300 RGB is 1,080,000 bytes decoded.
    let small_memory = ThumbnailConfig {
        decode_bytes_max: 1_000_000,
        ..ThumbnailConfig::default()
    };
    assert!(matches!(
        make(&png, &small_memory),
        Err(ThumbnailError::TooMuchMemory { .. })
    ));
    let small_input = ThumbnailConfig {
        source_bytes_max: png.len() - 1,
        ..ThumbnailConfig::default()
    };
    assert!(matches!(
        make(&png, &small_input),
        Err(ThumbnailError::InputTooLarge { .. })
    ));
}

#[test]
fn what_is_not_an_image_is_refused() {
    let config = ThumbnailConfig::default();
    assert!(matches!(
        make(b"hello, not an image", &config),
        Err(ThumbnailError::NotAnImage)
    ));
    assert!(matches!(
        make(b"", &config),
        Err(ThumbnailError::NotAnImage)
    ));
    // A format left out (BMP, known by its signature) is not an image here.
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&[0; 60]);
    assert_eq!(image::guess_format(&bmp).unwrap(), ImageFormat::Bmp);
    assert!(matches!(
        make(&bmp, &config),
        Err(ThumbnailError::NotAnImage)
    ));
    // A PNG cut short: its signature and header, then nothing.
    let png = encoded(&photo(300, 300).into(), ImageFormat::Png);
    let err = make(&png[..60], &config).unwrap_err();
    assert!(matches!(err, ThumbnailError::Damaged(_)), "{err}");
}

#[test]
fn config_problems() {
    assert!(
        ThumbnailConfig::default()
            .problems("files.thumbnail")
            .is_empty()
    );
    let bad = ThumbnailConfig {
        jpeg_quality: 0,
        box_width_px: 0,
        ..ThumbnailConfig::default()
    };
    let problems = bad.problems("files.thumbnail").join("\n");
    assert!(
        problems.contains("files.thumbnail.jpeg_quality"),
        "{problems}"
    );
    assert!(problems.contains("box_width_px"), "{problems}");
}
