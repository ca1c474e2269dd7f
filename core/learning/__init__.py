"""Learning: datasets, feature caches, augmentation, training (Keras, tf.distribute), evaluation, cross-fitted
heads and adaptation to a site. The only layer besides a Keras-fallback bundle that imports TensorFlow; nothing
on the scoring path imports it."""
