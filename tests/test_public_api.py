import raybb


def test_public_surface():
    assert set(raybb.__all__) == {
        "__version__", "Codec", "load_codec", "RaybbError", "BitstreamError", "TruncatedBitstream", "BadMagic",
        "UnsupportedVersion", "ChecksumMismatch", "ModelMismatch", "CorruptPayload", "CodingError", "ModelError",
        "WeightsError", "ImageError", "StorageError", "compress_bucket", "decompress_bucket", "CompressJobConfig",
        "DecompressJobConfig", "TrainConfig",
    }  # fmt: skip
    for name in raybb.__all__:
        assert getattr(raybb, name) is not None


def test_error_tree():
    from raybb import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.RaybbError)
    for sub in (
        "TruncatedBitstream",
        "BadMagic",
        "UnsupportedVersion",
        "ChecksumMismatch",
        "ModelMismatch",
        "CorruptPayload",
    ):
        assert issubclass(getattr(errors, sub), errors.BitstreamError)
    assert issubclass(errors.WeightsError, errors.ModelError)
