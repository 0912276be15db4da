"""scikit-learn-style estimators: :class:`RNNClassifier` and :class:`RNNRegressor`.

They follow scikit-learn's conventions without depending on it: ``__init__`` only stores its
arguments; ``fit`` validates, trains an :class:`rnnlab.RNN` and returns ``self``; what was learned
lives in attributes ending in ``_`` (``model_``, ``history_``, ``n_features_in_``, ``classes_``,
...); ``get_params``/``set_params`` introspect ``__init__``'s signature, so ``sklearn.base.clone``
and grid searches work.  ``X`` is ``(N, T, D)``, or ``(N, T)`` for one feature per step.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .model import RNN
from .train import History, TrainConfig

__all__ = ["NotFittedError", "RNNClassifier", "RNNRegressor"]


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before ``fit`` (a ValueError and an AttributeError, as in sklearn)."""


class _RNNEstimator:
    _estimator_type: ClassVar[str] = ""       # "classifier" / "regressor" (scikit-learn < 1.6)
    # learned attributes, set by fit (annotations only: absent until then)
    n_features_in_: int
    model_: RNN
    history_: History
    n_iter_: int

    def __init__(
        self,
        hidden_size: int = 64,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        *,
        epochs: int = 30,
        batch_size: int = 32,
        lr: float = 1e-2,
        optimizer: str = "adam",
        optimizer_kwargs: dict[str, Any] | None = None,
        schedule: str = "constant",
        schedule_kwargs: dict[str, Any] | None = None,
        clip_norm: float | None = None,
        algorithm: str = "bptt",
        k1: int | None = None,
        k2: int | None = None,
        init: str = "keras",
        dtype: str = "float32",
        validation_fraction: float | None = None,
        patience: int | None = None,
        verbose: bool = False,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.nonlinearity = nonlinearity
        self.bidirectional = bidirectional
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
        self.verbose = verbose
        self.random_state = random_state

    # ------------------------------------------------------------------------ parameters

    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments as stored (``deep`` is accepted for sklearn)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> _RNNEstimator:
        """Set constructor arguments; an unknown name raises ValueError listing the valid ones."""
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"invalid parameter {key!r} for estimator "
                                 f"{type(self).__name__}; valid parameters are {valid}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        shown = []
        for name in self._get_param_names():
            value = getattr(self, name)
            default = sig.parameters[name].default
            if not (value is default or (type(value) is type(default) and value == default)):
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def __sklearn_tags__(self) -> Any:
        """Tags for scikit-learn >= 1.6 (only scikit-learn calls this, so it is importable)."""
        from sklearn.utils import ClassifierTags, InputTags, RegressorTags, Tags, TargetTags

        classifier = self._estimator_type == "classifier"
        return Tags(estimator_type=self._estimator_type, target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags() if classifier else None,
                    regressor_tags=None if classifier else RegressorTags(),
                    input_tags=InputTags(two_d_array=True, three_d_array=True))

    # ------------------------------------------------------------------------ validation

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call "
                                 "'fit' with appropriate arguments before using this estimator.")

    def _check_X(self, X: ArrayLike, fitting: bool) -> NDArray[np.floating]:
        Xa = np.asarray(X)
        if Xa.dtype == object or not (np.issubdtype(Xa.dtype, np.number)
                                      or Xa.dtype == np.bool_):
            raise TypeError(f"X must be a numeric array; got dtype {Xa.dtype}")
        if np.issubdtype(Xa.dtype, np.complexfloating):
            raise TypeError("X must be real; got complex values")
        if Xa.ndim == 2:
            Xa = Xa[:, :, None]
        if Xa.ndim != 3 or Xa.shape[0] == 0 or Xa.shape[1] == 0:
            raise ValueError("X must be (N, T, D) sequences, or (N, T) with one feature per step, "
                             f"with N, T >= 1; got shape {np.shape(X)}")
        Xa = Xa.astype(np.dtype(self.dtype), copy=False)
        if not np.isfinite(Xa).all():
            raise ValueError("X contains NaN or inf")
        if not fitting and Xa.shape[2] != self.n_features_in_:
            raise ValueError(f"X has {Xa.shape[2]} features per step, but "
                             f"{type(self).__name__} was fitted with {self.n_features_in_}")
        return Xa

    @staticmethod
    def _check_mask(mask: ArrayLike | None, X: NDArray[Any]) -> NDArray[np.bool_] | None:
        if mask is None:
            return None
        m = np.asarray(mask)
        if m.dtype != np.bool_ or m.shape != X.shape[:2]:
            raise ValueError(f"mask must be (N, T) = {X.shape[:2]} bool; got {m.shape} {m.dtype}")
        return m

    @staticmethod
    def _check_lengths(X: NDArray[Any], y: NDArray[Any]) -> None:
        if y.ndim == 0 or y.shape[0] != X.shape[0]:
            raise ValueError(f"X and y have different numbers of sequences: X has {X.shape[0]}, "
                             f"y has {y.shape[0] if y.ndim else 'a scalar'}")

    # ------------------------------------------------------------------------ training

    def _train(self, X: NDArray[np.floating], y: NDArray[Any], mask: NDArray[np.bool_] | None,
               *, output_size: int, loss: str, setup: str) -> None:
        rs = self.random_state
        rng = rs if isinstance(rs, np.random.Generator) else np.random.default_rng(rs)
        init_seed, train_seed = (int(s) for s in rng.integers(0, 2**31 - 1, size=2))
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
            order = rng.permutation(n)
            vi, ti = np.sort(order[:n_val]), np.sort(order[n_val:])
            val = (X[vi], y[vi], None if mask is None else mask[vi])
            X, y, mask = X[ti], y[ti], None if mask is None else mask[ti]
        model = RNN(X.shape[2], self.hidden_size, self.num_layers, self.nonlinearity,
                    bidirectional=self.bidirectional, output_size=output_size, loss=loss,
                    setup=setup, init=self.init, dtype=self.dtype, seed=init_seed)
        cfg = TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
            optimizer_kwargs=self.optimizer_kwargs or {}, lr=self.lr, schedule=self.schedule,
            schedule_kwargs=self.schedule_kwargs or {}, clip_norm=self.clip_norm,
            algorithm=self.algorithm, k1=self.k1, k2=self.k2, seed=train_seed,
            monitor="val_loss" if val is not None else "train_loss", patience=self.patience,
            progress="on" if self.verbose else "off",
        )
        history = model.fit((X, y, mask), cfg, val=val)
        self.model_ = model
        self.history_ = history
        self.n_iter_ = history.epoch

    def _predict_outputs(self, X: ArrayLike, mask: ArrayLike | None) -> NDArray[Any]:
        """``y_hat``: probabilities for the classifier, values for the regressor."""
        self._check_fitted()
        Xa = self._check_X(X, fitting=False)
        m = self._check_mask(mask, Xa)
        if self.model_.spec.loss == "softmax_ce":
            return self.model_.predict_proba(Xa, mask=m)
        return self.model_.predict(Xa, mask=m)


class RNNClassifier(_RNNEstimator):
    """Sequence (or per-step) classification with an Elman RNN and softmax cross-entropy.

    ``y`` of shape ``(N,)`` gives one label per sequence (read at the last step); ``(N, T)`` one
    label per step.  Labels may be of any sortable kind; ``classes_`` holds them (``np.unique``).

    Attributes
    ----------
    classes_ : ndarray
    n_features_in_ : int
    model_ : RNN
    history_ : History
    n_iter_ : int
        Epochs run.
    """

    _estimator_type = "classifier"

    def fit(self, X: ArrayLike, y: ArrayLike, mask: ArrayLike | None = None) -> RNNClassifier:
        Xa = self._check_X(X, fitting=True)
        ya = np.asarray(y)
        self._check_lengths(Xa, ya)
        if ya.ndim == 2 and ya.shape[1] != Xa.shape[1]:
            raise ValueError(f"per-step labels y must be (N, T) = {Xa.shape[:2]}; got {ya.shape}")
        if ya.ndim not in (1, 2):
            raise ValueError(f"y must be (N,) labels per sequence or (N, T) per step; got shape "
                             f"{ya.shape}")
        m = self._check_mask(mask, Xa)
        classes, idx = np.unique(ya, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y needs at least 2 classes; got {len(classes)} ({classes!r})")
        self.n_features_in_ = int(Xa.shape[2])
        self.classes_: NDArray[Any] = classes
        self._train(Xa, idx.reshape(ya.shape).astype(np.int64), m, output_size=len(classes),
                    loss="softmax_ce", setup="many_to_one" if ya.ndim == 1 else "many_to_many")
        return self

    def predict_proba(self, X: ArrayLike, mask: ArrayLike | None = None) -> NDArray[np.floating]:
        """``(N, C)`` (or ``(N, T, C)``) probabilities, columns in the order of ``classes_``."""
        return self._predict_outputs(X, mask)

    def predict(self, X: ArrayLike, mask: ArrayLike | None = None) -> NDArray[Any]:
        """The most probable class of each sequence (or step), from ``classes_``."""
        proba = self.predict_proba(X, mask)           # checks that the estimator is fitted
        return self.classes_[proba.argmax(axis=-1)]

    def score(self, X: ArrayLike, y: ArrayLike, mask: ArrayLike | None = None) -> float:
        """Accuracy (over real steps when labels are per step and a mask is given)."""
        pred = self.predict(X, mask)
        ya = np.asarray(y)
        if ya.shape != pred.shape:
            raise ValueError(f"y must have shape {pred.shape}; got {ya.shape}")
        hit = pred == ya
        if mask is not None and ya.ndim == 2:
            hit = hit[np.asarray(mask)]
        return float(np.mean(hit))


class RNNRegressor(_RNNEstimator):
    """Sequence (or per-step) regression with an Elman RNN, identity output and MSE.

    ``y`` of shape ``(N,)`` or ``(N, O)`` is one target per sequence (read at the last step);
    ``(N, T, O)`` one target per step.  :meth:`predict` returns the shape ``y`` had.

    Attributes
    ----------
    n_features_in_, n_outputs_ : int
    y_ndim_ : int
        Dimensions of the ``y`` given to fit.
    model_ : RNN
    history_ : History
    n_iter_ : int
    """

    _estimator_type = "regressor"

    def fit(self, X: ArrayLike, y: ArrayLike, mask: ArrayLike | None = None) -> RNNRegressor:
        Xa = self._check_X(X, fitting=True)
        ya = np.asarray(y)
        self._check_lengths(Xa, ya)
        if not (np.issubdtype(ya.dtype, np.number) or ya.dtype == np.bool_) or \
                np.issubdtype(ya.dtype, np.complexfloating):
            raise TypeError(f"y must hold real numbers; got dtype {ya.dtype}")
        if ya.ndim == 3 and ya.shape[1] != Xa.shape[1]:
            raise ValueError(f"per-step targets y must be (N, T, O) with T = {Xa.shape[1]}; got "
                             f"{ya.shape}")
        if ya.ndim not in (1, 2, 3):
            raise ValueError(f"y must be (N,), (N, O) or (N, T, O); got shape {ya.shape}")
        y2 = ya.reshape(-1, 1) if ya.ndim == 1 else ya
        y2 = y2.astype(np.dtype(self.dtype))
        if not np.isfinite(y2).all():
            raise ValueError("y contains NaN or inf")
        m = self._check_mask(mask, Xa)
        self.n_features_in_ = int(Xa.shape[2])
        self.n_outputs_: int = int(y2.shape[-1])
        self.y_ndim_: int = int(ya.ndim)
        self._train(Xa, y2, m, output_size=self.n_outputs_, loss="identity_mse",
                    setup="many_to_many" if ya.ndim == 3 else "many_to_one")
        return self

    def predict(self, X: ArrayLike, mask: ArrayLike | None = None) -> NDArray[np.floating]:
        y = self._predict_outputs(X, mask)
        return y[:, 0] if self.y_ndim_ == 1 else y

    def score(self, X: ArrayLike, y: ArrayLike, mask: ArrayLike | None = None) -> float:
        """Coefficient of determination R^2, averaged uniformly over outputs (as sklearn)."""
        pred = self.predict(X, mask)
        ya = np.asarray(y, dtype=np.float64)
        if ya.shape != pred.shape:
            raise ValueError(f"y must have shape {pred.shape}; got {ya.shape}")
        p = pred.astype(np.float64)
        if mask is not None and ya.ndim == 3:
            ya, p = ya[np.asarray(mask)], p[np.asarray(mask)]
        ya, p = ya.reshape(len(ya), -1), p.reshape(len(p), -1)
        ss_res = ((ya - p) ** 2).sum(axis=0)
        ss_tot = ((ya - ya.mean(axis=0)) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
        return float(r2.mean())
