"""`resnet-tf export`: a model source written in a runtime's format and precision, int8
calibrated on real images and its accuracy measured (`export.deploy`)."""

from __future__ import annotations

from resnet_tf.commands.model_source import check_source_options, load_source
from resnet_tf.errors import UserError
from resnet_tf.export.export_dir import check_format, check_output
from resnet_tf.utils import require_tensorflow_backend

INT8_OPTIONS = ("calibration_data", "calibration_images", "validation_data",
                "max_accuracy_drop")


def run(args) -> int:
    check_source_options(args)
    check_format(args.format, args.precision)
    check_output(args.output, args.overwrite)  # before loading anything
    if args.precision == "int8" and not args.model_dir and not args.calibration_data:
        raise UserError("--precision int8 from --slim-checkpoint or --weights needs "
                        "--calibration-data DIR (real images to calibrate on)")
    for key in INT8_OPTIONS:
        if getattr(args, key) is not None and args.precision != "int8":
            raise UserError(f"--{key.replace('_', '-')} is for --precision int8. Received: "
                            f"--precision {args.precision}")
    require_tensorflow_backend("resnet-tf export")
    source = load_source(args)
    from resnet_tf.export.deploy import export_model
    from resnet_tf.export.int8 import int8_options

    quantization = None
    if args.precision == "int8":
        quantization = int8_options(source, args.calibration_data, args.calibration_images,
                                    args.validation_data, args.max_accuracy_drop)
    path = export_model(source.model, args.output, source.prep, format=args.format,
                        precision=args.precision, class_names=source.class_names,
                        quantization=quantization, overwrite=args.overwrite)
    print(f"Exported {source.model.name} ({args.format}, {args.precision}, "
          f"{source.prep.image_size}x{source.prep.image_size} inputs) to {path}")
    return 0
