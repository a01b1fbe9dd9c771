"""tf.scratch: the book's TensorFlow ``batch_norm`` / ``BatchNorm`` (equiv/book/d2l_tensorflow.py).

The book's layer hard-codes eps 1e-5 (in ``call``) and momentum 0.1 (in
``assign_moving_average``), and its ``batch_norm`` function is only the affine step:
the batch statistics and the moving-average update live in ``call``. Another setting
cannot be honoured without rewriting the book's code, so the adapter always runs the
layer as printed and reports what it really uses: ``self.eps`` = 1e-5 and
``self.new_batch_weight`` = 0.1 whatever was asked (the properties read them from here).

Keras 3 removed ``Layer.add_update``, which the book's ``call`` uses. The adapter's
subclass restores the Keras 2 method for this use: Keras 2 ran only *callable* updates,
and the book passes the results of ``variable.assign``, which has already run, so the
method did nothing. That is all the subclass adds. The dtype is the layer's ``dtype``
argument (a Keras dtype policy: variables and computation in that dtype). The mode is
the ``training`` argument, which has no default: a plain call raises TypeError on Keras 3.

The book's ``call`` is a ``tf.function``: each layer instance traces it anew (per input
shape and mode), which costs more than the layer's arithmetic. Adapters therefore reuse
built layers: a layer whose adapter is gone goes back to a pool (per dtype and input rank
and width), and an adapter that takes it assigns the fresh layer's values (ones, zeros,
zeros, ones, as the book's ``build`` makes them) before use. The traced graph is the one a
fresh layer traces; a layer is never shared by two live adapters.
"""
from equiv.backends.keras import LayerPool
from equiv.backends.tf import KerasLayerAdapter, native_shape
from equiv.book import d2l_tensorflow as book
from equiv.conventions import DECLARED

BOOK_EPS, BOOK_MOMENTUM = 1e-5, 0.1

class BookLayer(book.BatchNorm):
    def add_update(self, updates):
        """Keras 2's ``Layer.add_update`` for the book's non-callable updates: nothing to do."""
        return None

class TFScratch(KerasLayerAdapter):
    name, framework = "tf.scratch", "tensorflow-cpu"
    conventions = DECLARED[name]
    dtypes = ("float64", "float32", "float16", "bfloat16")

    def build(self, momentum, eps):
        self.eps, self.new_batch_weight = BOOK_EPS, BOOK_MOMENTUM   # hard-coded in the book's layer
        self.layer = _pool.take(self, (self.dtype, self.ndim, self.num_features), self._new_layer)

    def _new_layer(self):
        layer = BookLayer(dtype=self.dtype)
        layer.build(native_shape(self.ndim, self.num_features))
        return layer


_pool = LayerPool()
