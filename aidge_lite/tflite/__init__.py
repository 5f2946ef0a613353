"""Import of fully-integer int8 TFLite models (TFLite reference-kernel arithmetic)."""
