"""Models: bundles and their cards (schema, releases, identity), runtimes (LiteRT, numpy heads; Keras only for a
bundle without a LiteRT export), heads, backbones, the combined model, calibration, the card's operating points
and embedding statistics, export and Grad-CAM. Imports photos and the shared modules; never triage, store,
reports or learning."""
