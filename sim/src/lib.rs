//! weft-sim (placeholder: being written)
