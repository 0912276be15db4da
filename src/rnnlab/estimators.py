"""scikit-learn estimators: :class:`RNNClassifier` and :class:`RNNRegressor` (needs scikit-learn,
``pip install 'rnnlab[sklearn]'``).

They are scikit-learn estimators (``BaseEstimator`` with ``ClassifierMixin`` /
``RegressorMixin``): ``__init__`` only stores its arguments; ``fit`` validates with scikit-learn's
``validate_data`` and returns ``self``; what was learned ends in ``_``; they pass
``sklearn.utils.estimator_checks.check_estimator`` except the checks listed in
:data:`EXPECTED_FAILED_CHECKS` (with the reason), and work in ``Pipeline``, ``GridSearchCV`` and
``cross_val_score``.

A sequence is ``T`` steps of ``D`` features.  ``X`` may be 3-D ``(N, T, D)``, or 2-D ``(N, T*D)``
as scikit-learn passes it (each row the steps one after another): ``n_steps`` says how many steps
a row holds (default: one feature per step, ``T = n_features``).  ``n_features_in_`` is ``T*D``.
A 3-D ``X`` at prediction may have any number of steps (an RNN reads any length) but the same
``D``.

::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), RNNClassifier(n_steps=8, epochs=20, random_state=0))
    clf.fit(X_train, y_train)            # X_train (N, 64): 8 steps of 8 pixels
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import DataConversionWarning, NotFittedError
    from sklearn.utils import check_array
    from sklearn.utils.class_weight import compute_class_weight
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:          # pragma: no cover - exercised without scikit-learn
    raise ImportError(f"rnnlab's scikit-learn estimators need scikit-learn >= 1.6 ({exc}): "
                      "pip install 'rnnlab[sklearn]'") from None

from .core import network
from .core.losses import log_softmax
from .model import RNN
from .train import History, TrainConfig

__all__ = ["EXPECTED_FAILED_CHECKS", "NotFittedError", "RNNClassifier", "RNNRegressor"]

EXPECTED_FAILED_CHECKS: dict[str, str] = {
    "check_sample_weight_equivalence_on_dense_data": (
        "minibatch training: a sequence repeated k times lands in other minibatches than one "
        "sequence of weight k, and each minibatch is a weighted mean, so the two fits differ "
        "(as for scikit-learn's own SGD and MLP estimators)"),
    "check_sample_weights_invariance(kind=zeros)": (
        "zero-weight rows are dropped before training, but the check also shuffles the rows, "
        "and the minibatches follow the row order: the same data in another order gives "
        "another (equally good) fit"),
}
"""The scikit-learn checks these estimators do not pass, and why (``check_estimator(...,
expected_failed_checks=EXPECTED_FAILED_CHECKS)``)."""


def _sample_weight(sample_weight: ArrayLike, n: int) -> NDArray[np.float64]:
    """``(n,)`` finite weights ``>= 0`` (a scalar is every sequence's weight)."""
    if isinstance(sample_weight, numbers.Real):
        w = np.full(n, float(sample_weight))
    else:
        w = check_array(sample_weight, ensure_2d=False, dtype=np.float64,
                        ensure_all_finite=True, input_name="sample_weight")
    if w.shape != (n,):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected ({n},): one weight per "
                         "sequence")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must be finite and >= 0 (negative values in "
                         "sample_weight)")
    return w


def _seeds(random_state: Any) -> tuple[int, int]:
    """(initialisation seed, training seed) from None, an int, a Generator or a RandomState."""
    if isinstance(random_state, np.random.RandomState):
        a, b = random_state.randint(0, 2**31 - 1, size=2)
    else:
        if not (random_state is None or isinstance(random_state, np.random.Generator) or (
                isinstance(random_state, numbers.Integral)
                and not isinstance(random_state, bool))):
            raise ValueError(f"random_state must be None, an int, a numpy Generator or "
                             f"RandomState; got {random_state!r}")
        rng = (random_state if isinstance(random_state, np.random.Generator)
               else np.random.default_rng(None if random_state is None else int(random_state)))
        a, b = rng.integers(0, 2**31 - 1, size=2)
    return int(a), int(b)


class _RNNEstimator(BaseEstimator):
    """What the classifier and the regressor share: hyper-parameters, ``X``, training."""

    # learned attributes, set by fit (annotations only: absent until then)
    n_features_in_: int
    n_steps_in_: int
    n_features_per_step_: int
    model_: RNN
    history_: History
    n_iter_: int
    _seeds: tuple[int, int]
    _opt_state: dict[str, Any] | None

    def __init__(
        self,
        hidden_size: int = 64,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        *,
        n_steps: int | None = None,
        epochs: int = 50,
        batch_size: int = 16,
        lr: float = 1e-3,
        optimizer: str = "adam",
        optimizer_kwargs: dict[str, Any] | None = None,
        schedule: str = "constant",
        schedule_kwargs: dict[str, Any] | None = None,
        clip_norm: float | str | None = "auto",
        algorithm: str = "bptt",
        k1: int | None = None,
        k2: int | None = None,
        init: str = "keras",
        dtype: str = "float32",
        validation_fraction: float | None = None,
        patience: int | None = None,
        warm_start: bool = False,
        callbacks: list[Any] | None = None,
        verbose: bool = False,
        random_state: Any = None,
    ) -> None:
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.nonlinearity = nonlinearity
        self.bidirectional = bidirectional
        self.n_steps = n_steps
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.optimizer_kwargs = optimizer_kwargs
        self.schedule = schedule
        self.schedule_kwargs = schedule_kwargs
        self.clip_norm = clip_norm
        self.algorithm = algorithm
        self.k1 = k1
        self.k2 = k2
        self.init = init
        self.dtype = dtype
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.warm_start = warm_start
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.target_tags.required = True
        return tags

    # ------------------------------------------------------------------------ X

    def _float_dtype(self) -> np.dtype:
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {self.dtype!r}")
        return np.dtype(self.dtype)

    def _steps_of(self, n_features: int, n_steps: int | None) -> int:
        if n_steps is None:
            return n_features
        if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) \
                or n_steps < 1:
            raise ValueError(f"n_steps must be None or an int >= 1; got {n_steps!r}")
        if n_features % n_steps:
            raise ValueError(f"n_steps={n_steps} does not divide the {n_features} features of "
                             f"X: a 2-D X is read as (N, n_steps, n_features / n_steps)")
        return int(n_steps)

    def _X(self, X: ArrayLike, *, reset: bool) -> NDArray[np.floating]:
        """``X`` validated (scikit-learn's ``validate_data`` on its 2-D form) as ``(N, T, D)``."""
        dtype = self._float_dtype()
        if not reset:
            check_is_fitted(self)
        ndim = getattr(X, "ndim", None)
        if ndim is None and isinstance(X, list | tuple):
            ndim = np.ndim(X)
        if ndim == 3:
            X3 = check_array(X, allow_nd=True, dtype=[np.float64, np.float32],
                             ensure_all_finite=True, input_name="X")
            N, T, D = X3.shape
            if T == 0 or D == 0:
                raise ValueError(f"X must have T >= 1 steps and D >= 1 features; got shape "
                                 f"{X3.shape}")
            if reset:
                validate_data(self, X3.reshape(N, T * D), reset=True)
                self.n_steps_in_, self.n_features_per_step_ = int(T), int(D)
            elif D != self.n_features_per_step_:
                raise ValueError(f"X has {D} features per step, but {type(self).__name__} is "
                                 f"expecting {self.n_features_per_step_} features per step as "
                                 "input")
            return X3.astype(dtype, copy=False)
        X2 = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32],
                           ensure_all_finite=True)
        N, F = X2.shape
        if reset:
            T = self._steps_of(F, self.n_steps)
            self.n_steps_in_, self.n_features_per_step_ = T, F // T
        T, D = self.n_steps_in_, self.n_features_per_step_
        return np.asarray(X2, dtype=dtype).reshape(N, T, D)

    @staticmethod
    def _mask(mask: ArrayLike | None, X: NDArray[Any]) -> NDArray[np.bool_] | None:
        if mask is None:
            return None
        m = np.asarray(mask)
        if m.dtype != np.bool_ or m.shape != X.shape[:2]:
            raise ValueError(f"mask must be (N, T) = {X.shape[:2]} bool; got {m.shape} {m.dtype}")
        return m

    def _logits(self, X: ArrayLike, mask: ArrayLike | None) -> NDArray[np.floating]:
        """The logits in float64, from float64 copies of the trained weights: a sequence's
        prediction does not depend on which other sequences share its batch (float32 products
        round differently with the batch's size and order)."""
        Xa = self._X(X, reset=False).astype(np.float64, copy=False)
        m = self._mask(mask, Xa)
        params = {k: v.astype(np.float64) for k, v in self.model_.params.items()}
        spec = self.model_.spec
        parts = [network.forward(params, Xa[s:s + 1024], spec,
                                 mask=None if m is None else m[s:s + 1024])[0].logits
                 for s in range(0, Xa.shape[0], 1024)]
        if not parts:
            raise ValueError("X has no sequences (N = 0)")
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    # ------------------------------------------------------------------------ training

    def _weights(self, X2: NDArray[Any], sample_weight: ArrayLike | None,
                 class_w: NDArray[np.floating] | None) -> NDArray[np.floating] | None:
        """One weight per sequence (or per sequence and step, with per-step class weights);
        None when every weight is the same (the weighted mean is then the plain mean)."""
        w: NDArray[np.floating] | None = None
        if sample_weight is not None:
            w = _sample_weight(sample_weight, X2.shape[0])
        if class_w is not None:
            w = class_w if w is None else (w[:, None] * class_w if class_w.ndim == 2
                                           else w * class_w)
        if w is not None and np.all(w == w.flat[0]):
            return None if w.flat[0] > 0 else w
        return w

    def _train(self, X: NDArray[np.floating], y: NDArray[Any], mask: NDArray[np.bool_] | None,
               w: NDArray[np.floating] | None, *, output_size: int, loss: str, setup: str,
               epochs: int, continuing: bool) -> None:
        if w is not None:                    # rows that weigh nothing are not trained on
            keep = (w > 0) if w.ndim == 1 else (w > 0).any(axis=1)
            if not keep.any():
                raise ValueError("every sample weight is zero (sample_weight times "
                                 "class_weight): nothing to learn from")
            if not keep.all():
                X, y, w = X[keep], y[keep], w[keep]
                mask = None if mask is None else mask[keep]
            if np.all(w == w.flat[0]):
                w = None
        if continuing:
            init_seed, train_seed = self._seeds
        else:
            init_seed, train_seed = self._seeds = _seeds(self.random_state)
        val = None
        n = X.shape[0]
        if self.validation_fraction is not None:
            f = self.validation_fraction
            if isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f < 1:
                raise ValueError(f"validation_fraction must be None or a number in (0, 1); "
                                 f"got {f!r}")
            if n < 2:
                raise ValueError(f"validation_fraction needs at least 2 sequences; got {n}")
            n_val = min(max(1, round(f * n)), n - 1)
            order = np.random.default_rng(train_seed + 1).permutation(n)
            vi, ti = np.sort(order[:n_val]), np.sort(order[n_val:])
            val = (X[vi], y[vi], None if mask is None else mask[vi])
            X, y, mask = X[ti], y[ti], None if mask is None else mask[ti]
            w = None if w is None else w[ti]
        if not continuing:
            self.model_ = RNN(X.shape[2], self.hidden_size, self.num_layers, self.nonlinearity,
                              bidirectional=self.bidirectional, output_size=output_size,
                              loss=loss, setup=setup, init=self.init, dtype=self.dtype,
                              seed=init_seed)
            self.n_iter_ = 0
            self._opt_state = None
        cfg = TrainConfig(
            epochs=epochs, batch_size=self.batch_size, optimizer=self.optimizer,
            optimizer_kwargs=self.optimizer_kwargs or {}, lr=self.lr, schedule=self.schedule,
            schedule_kwargs=self.schedule_kwargs or {}, clip_norm=self.clip_norm,
            algorithm=self.algorithm, k1=self.k1, k2=self.k2, seed=train_seed + self.n_iter_,
            monitor="val_loss" if val is not None else "train_loss", patience=self.patience,
            progress="on" if self.verbose else "off",
        )
        history = self.model_.fit((X, y, mask), cfg, val=val, sample_weight=w,
                                  opt_state=self._opt_state, callbacks=self.callbacks)
        self.history_ = history
        self._opt_state = history.opt_state
        self.n_iter_ += history.epoch

    def _check_epochs(self) -> int:
        e = self.epochs
        if isinstance(e, bool) or not isinstance(e, numbers.Integral) or e < 1:
            raise ValueError(f"epochs must be an int >= 1; got {e!r}")
        return int(e)


class RNNClassifier(ClassifierMixin, _RNNEstimator):
    """Sequence (or per-step) classification with an Elman RNN and softmax cross-entropy.

    Parameters
    ----------
    hidden_size, num_layers, nonlinearity, bidirectional
        The network (:class:`rnnlab.RNN`).
    n_steps : int, optional
        How many steps a row of a 2-D ``X`` holds (``(N, n_steps * D)``); default one feature
        per step.  Ignored for a 3-D ``X``.
    epochs, batch_size, lr, optimizer, optimizer_kwargs, schedule, schedule_kwargs, clip_norm,
    algorithm, k1, k2
        Training (:class:`rnnlab.TrainConfig`); ``epochs`` per call of ``fit``.  The defaults
        were measured for the estimators (``python -m benchmarks.estimator_defaults``): 50
        epochs, minibatches of 16, Adam at a constant 1e-3, the gradient norm clipped at 1 by
        ``clip_norm="auto"``.  TrainConfig decays its rate (lr 2e-3, cosine) instead; an
        estimator keeps a constant one because ``partial_fit`` and ``warm_start`` continue the
        optimizer's update count, which a decay over one call's epochs would have spent.
    init, dtype
        Initialiser and float type of the network.
    validation_fraction : float, optional
        Hold out this part of the data for ``val_loss``, which ``patience`` then monitors.
    patience : int, optional
        Stop after this many epochs without improvement (of ``val_loss``, else ``train_loss``).
    class_weight : dict, "balanced" or None
        Weights of the classes in the loss (a dict ``{label: weight}``, or inversely
        proportional to the class frequencies); multiplies ``sample_weight``.
    warm_start : bool
        A second ``fit`` continues from the fitted network and optimizer state (same classes
        and features) for ``epochs`` more epochs.
    callbacks : list, optional
        Keras-style callbacks (:mod:`rnnlab.train.callbacks`) passed to every training call.
    verbose : bool
        Progress bar on stderr.
    random_state : None, int, Generator or RandomState
        Seeds the initialisation and the shuffling.

    Attributes
    ----------
    classes_ : ndarray
        The labels, sorted; probability columns follow this order.
    n_features_in_ : int
        Features of a (flattened) sequence, ``T*D``.
    n_steps_in_, n_features_per_step_ : int
        ``T`` and ``D`` of the training data.
    model_ : rnnlab.RNN
    history_ : rnnlab.History
        Of the last training call.
    n_iter_ : int
        Epochs trained in all (``fit`` and ``partial_fit`` calls).

    Notes
    -----
    ``y`` of shape ``(N,)`` gives one label per sequence (read after the last step); ``(N, T)``
    one label per step.  Continuous targets are refused (``Unknown label type``), as are NaN
    labels.  scikit-learn's ``check_estimator`` passes except :data:`EXPECTED_FAILED_CHECKS`.
    """

    classes_: NDArray[Any]

    def __init__(
        self,
        hidden_size: int = 64,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        *,
        n_steps: int | None = None,
        epochs: int = 50,
        batch_size: int = 16,
        lr: float = 1e-3,
        optimizer: str = "adam",
        optimizer_kwargs: dict[str, Any] | None = None,
        schedule: str = "constant",
        schedule_kwargs: dict[str, Any] | None = None,
        clip_norm: float | str | None = "auto",
        algorithm: str = "bptt",
        k1: int | None = None,
        k2: int | None = None,
        init: str = "keras",
        dtype: str = "float32",
        validation_fraction: float | None = None,
        patience: int | None = None,
        class_weight: dict[Any, float] | str | None = None,
        warm_start: bool = False,
        callbacks: list[Any] | None = None,
        verbose: bool = False,
        random_state: Any = None,
    ) -> None:
        super().__init__(
            hidden_size, num_layers, nonlinearity, bidirectional, n_steps=n_steps,
            epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
            optimizer_kwargs=optimizer_kwargs, schedule=schedule,
            schedule_kwargs=schedule_kwargs, clip_norm=clip_norm, algorithm=algorithm, k1=k1,
            k2=k2, init=init, dtype=dtype, validation_fraction=validation_fraction,
            patience=patience, warm_start=warm_start, callbacks=callbacks, verbose=verbose,
            random_state=random_state)
        self.class_weight = class_weight

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags

    def _y(self, y: ArrayLike, X: NDArray[Any]) -> NDArray[Any]:
        if y is None:
            raise ValueError(f"requires y to be passed, but the target y is None "
                             f"({type(self).__name__}.fit(X, y))")
        ya = check_array(y, ensure_2d=False, dtype=None, ensure_all_finite=True,
                         input_name="y")
        if ya.ndim == 2 and ya.shape[1] == 1 and X.shape[1] != 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected. Please "
                          "change the shape of y to (n_samples,), for example using ravel().",
                          DataConversionWarning, stacklevel=3)
            ya = ya[:, 0]
        if ya.shape[0] != X.shape[0]:
            raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                             f"X has {X.shape[0]} sequences, y has {ya.shape[0]}")
        if ya.ndim == 2 and ya.shape[1] != X.shape[1]:
            raise ValueError(f"per-step labels y must be (N, T) = {X.shape[:2]}; got {ya.shape}")
        if ya.ndim not in (1, 2):
            raise ValueError(f"y must be (N,) labels per sequence or (N, T) per step; got shape "
                             f"{ya.shape}")
        check_classification_targets(ya)
        return ya

    def _class_weights(self, idx: NDArray[np.intp], y: NDArray[Any],
                       mask: NDArray[np.bool_] | None) -> NDArray[np.floating] | None:
        if self.class_weight is None:
            return None
        seen = y[mask] if (mask is not None and y.ndim == 2) else y.ravel()
        cw = compute_class_weight(self.class_weight, classes=self.classes_, y=seen)
        return np.asarray(cw, dtype=np.float64)[idx]

    def _fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None,
             mask: ArrayLike | None, *, epochs: int, classes: ArrayLike | None,
             partial: bool) -> RNNClassifier:
        continuing = hasattr(self, "model_") and (partial or self.warm_start)
        Xa = self._X(X, reset=not continuing)
        ya = self._y(y, Xa)
        m = self._mask(mask, Xa)
        if continuing:
            unseen = np.setdiff1d(np.unique(ya), self.classes_)
            if unseen.size:
                raise ValueError(f"y has classes {unseen.tolist()} that the fitted model does "
                                 f"not know; classes_ are {self.classes_.tolist()} (refit "
                                 "without warm_start)")
            if (ya.ndim == 2) != (self.model_.spec.setup == "many_to_many"):
                raise ValueError("y must keep its kind (per sequence or per step) between fits")
        elif partial and classes is not None:
            self.classes_ = np.unique(np.asarray(classes))
            unseen = np.setdiff1d(np.unique(ya), self.classes_)
            if unseen.size:
                raise ValueError(f"y has labels {unseen.tolist()} not in classes "
                                 f"{self.classes_.tolist()}")
        elif partial:
            raise ValueError("classes must be passed on the first call to partial_fit (every "
                             "label of every later call)")
        else:
            self.classes_ = np.unique(ya)
        if len(self.classes_) < 2:
            raise ValueError(f"y has 1 class ({self.classes_[0]!r}); a classifier needs at "
                             "least 2 classes")
        idx = np.searchsorted(self.classes_, ya).astype(np.int64)
        X2 = Xa.reshape(Xa.shape[0], -1)
        w = self._weights(X2, sample_weight, self._class_weights(idx, ya, m))
        self._train(Xa, idx, m, w, output_size=len(self.classes_), loss="softmax_ce",
                    setup="many_to_one" if ya.ndim == 1 else "many_to_many", epochs=epochs,
                    continuing=continuing)
        return self

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
            mask: ArrayLike | None = None) -> RNNClassifier:
        """Train for ``epochs`` epochs (continuing the fitted model with ``warm_start``).

        Parameters
        ----------
        X : (N, T, D) or (N, T*D) array
        y : (N,) or (N, T) labels
        sample_weight : (N,) array, optional
            Weight of each sequence's loss (eq. 15w of docs/derivation.md); zero-weight
            sequences are not trained on.
        mask : (N, T) bool, optional
            True at real steps (variable lengths).
        """
        return self._fit(X, y, sample_weight, mask, epochs=self._check_epochs(), classes=None,
                         partial=False)

    def partial_fit(self, X: ArrayLike, y: ArrayLike, classes: ArrayLike | None = None,
                    sample_weight: ArrayLike | None = None, mask: ArrayLike | None = None
                    ) -> RNNClassifier:
        """One epoch over ``(X, y)``, continuing the network and the optimizer state; the first
        call needs ``classes`` (every label any call will see)."""
        return self._fit(X, y, sample_weight, mask, epochs=1, classes=classes, partial=True)

    def predict_proba(self, X: ArrayLike, mask: ArrayLike | None = None) -> NDArray[np.floating]:
        """``(N, C)`` (or per step ``(N, T, C)``) probabilities, columns in ``classes_`` order."""
        z = self._logits(X, mask)
        return np.exp(log_softmax(z.reshape(-1, z.shape[-1]))).reshape(z.shape)

    def predict_log_proba(self, X: ArrayLike, mask: ArrayLike | None = None
                          ) -> NDArray[np.floating]:
        """Log-probabilities (by log-sum-exp, finite where ``log(predict_proba)`` would be
        ``-inf``)."""
        z = self._logits(X, mask)
        return log_softmax(z.reshape(-1, z.shape[-1])).reshape(z.shape)

    def predict(self, X: ArrayLike, mask: ArrayLike | None = None) -> NDArray[Any]:
        """The most probable class of each sequence (or step), from ``classes_``."""
        best = self._logits(X, mask).argmax(axis=-1)      # checks that the model is fitted
        return self.classes_[best]

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
              mask: ArrayLike | None = None) -> float:
        """Accuracy (weighted by ``sample_weight``; over real steps for per-step labels)."""
        pred = self.predict(X, mask)
        ya = np.asarray(y)
        if ya.shape != pred.shape:
            raise ValueError(f"y must have shape {pred.shape}; got {ya.shape}")
        hit = (pred == ya).astype(np.float64)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if ya.ndim == 2:
            keep = np.ones(ya.shape, bool) if mask is None else np.asarray(mask)
            ww = np.ones(ya.shape) if w is None else np.broadcast_to(w[:, None], ya.shape)
            return float((hit * ww)[keep].sum() / ww[keep].sum())
        return float(np.average(hit, weights=w))


class RNNRegressor(RegressorMixin, _RNNEstimator):
    """Sequence (or per-step) regression with an Elman RNN, identity output and MSE.

    Parameters are those of :class:`RNNClassifier` except ``class_weight``.

    Attributes
    ----------
    n_features_in_, n_steps_in_, n_features_per_step_ : int
    n_outputs_ : int
    y_ndim_ : int
        Dimensions of the ``y`` given to fit: :meth:`predict` returns that shape.
    model_, history_, n_iter_

    Notes
    -----
    ``y`` of shape ``(N,)`` or ``(N, O)`` is one target per sequence (read after the last
    step); ``(N, T, O)`` one target per step.  scikit-learn's ``check_estimator`` passes except
    :data:`EXPECTED_FAILED_CHECKS`.
    """

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _y(self, y: ArrayLike, X: NDArray[Any]) -> NDArray[np.floating]:
        if y is None:
            raise ValueError(f"requires y to be passed, but the target y is None "
                             f"({type(self).__name__}.fit(X, y))")
        ya = check_array(y, ensure_2d=False, allow_nd=True, dtype="numeric",
                         ensure_all_finite=True, input_name="y")
        if ya.shape[0] != X.shape[0]:
            raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                             f"X has {X.shape[0]} sequences, y has {ya.shape[0]}")
        if ya.ndim == 3 and ya.shape[1] != X.shape[1]:
            raise ValueError(f"per-step targets y must be (N, T, O) with T = {X.shape[1]}; got "
                             f"{ya.shape}")
        if ya.ndim not in (1, 2, 3):
            raise ValueError(f"y must be (N,), (N, O) or (N, T, O); got shape {ya.shape}")
        return ya

    def _fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None,
             mask: ArrayLike | None, *, epochs: int, partial: bool) -> RNNRegressor:
        continuing = hasattr(self, "model_") and (partial or self.warm_start)
        Xa = self._X(X, reset=not continuing)
        ya = self._y(y, Xa)
        y2 = (ya.reshape(-1, 1) if ya.ndim == 1 else ya).astype(self._float_dtype())
        if continuing and (y2.shape[-1] != self.n_outputs_ or ya.ndim != self.y_ndim_):
            raise ValueError(f"y has shape {ya.shape}; the fitted model predicts "
                             f"{self.n_outputs_} output(s) of a {self.y_ndim_}-D y")
        m = self._mask(mask, Xa)
        self.n_outputs_: int = int(y2.shape[-1])
        self.y_ndim_: int = int(ya.ndim)
        w = self._weights(Xa.reshape(Xa.shape[0], -1), sample_weight, None)
        self._train(Xa, y2, m, w, output_size=self.n_outputs_, loss="identity_mse",
                    setup="many_to_many" if ya.ndim == 3 else "many_to_one", epochs=epochs,
                    continuing=continuing)
        return self

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
            mask: ArrayLike | None = None) -> RNNRegressor:
        """Train for ``epochs`` epochs (arguments as :meth:`RNNClassifier.fit`)."""
        return self._fit(X, y, sample_weight, mask, epochs=self._check_epochs(), partial=False)

    def partial_fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
                    mask: ArrayLike | None = None) -> RNNRegressor:
        """One epoch over ``(X, y)``, continuing the network and the optimizer state."""
        return self._fit(X, y, sample_weight, mask, epochs=1, partial=True)

    def predict(self, X: ArrayLike, mask: ArrayLike | None = None) -> NDArray[np.floating]:
        """Predictions shaped like the ``y`` given to fit."""
        y = self._logits(X, mask)
        return y[:, 0] if self.y_ndim_ == 1 else y

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
              mask: ArrayLike | None = None) -> float:
        """Coefficient of determination R^2, averaged uniformly over outputs (as scikit-learn;
        per-step targets: over real steps)."""
        from sklearn.metrics import r2_score

        pred = self.predict(X, mask).astype(np.float64)
        ya = np.asarray(y, dtype=np.float64)
        if ya.shape != pred.shape:
            raise ValueError(f"y must have shape {pred.shape}; got {ya.shape}")
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if ya.ndim == 3:
            keep = np.ones(ya.shape[:2], bool) if mask is None else np.asarray(mask)
            if w is not None:
                w = np.broadcast_to(w[:, None], ya.shape[:2])[keep]
            ya, pred = ya[keep], pred[keep]
        return float(r2_score(ya, pred, sample_weight=w))
