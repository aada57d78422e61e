"""``Config``: RecBole's configuration with the plugin's YAML layered in.

Precedence, lowest to highest (RecBole's own order, with the plugin's
defaults slotted above RecBole's):

1. RecBole's ``properties/`` (overall, model, dataset, quick-start presets)
2. this repository's ``properties/overall.yaml``,
   ``properties/model/<Model>.yaml``, for sequential models
   ``properties/dataset/default-sequential.yaml`` (the default protocol, its
   columns read from the ``.inter`` header when the data set has no YAML of
   its own), ``properties/dataset/<dataset>.yaml``
3. the user's ``config_file_list``, then ``config_dict``, then ``cmd_args``
   (``["--key=value", ...]``: the command line's overrides, passed in; unlike
   RecBole's Config, this one never reads ``sys.argv`` itself)

``data_path`` is the user's, else ``$RECBOLE_LPO_DATA``, else the
checkout's ``dataset/`` folder (``recbole_lpo.paths.default_data_path``).
Every check that needs no data (``recbole_lpo.checks``: unknown keys,
ranges, the preference objective, tail metrics, the data set's existence)
runs here, each failure one clear ``UserInputError``.
"""

import os

import torch
import torch.distributed as dist
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_lpo.checks import check_config, check_types, documented_types
from recbole_lpo.data.atomic import header_types
from recbole_lpo.errors import UserInputError
from recbole_lpo.checkpoint import backbone_class
from recbole_lpo.objective import MODEL_OF_LOSS
from recbole_lpo.paths import PROPERTIES_DIR, RECBOLE_PROPERTIES_DIR, default_data_path
from recbole_lpo.utils import get_model

DEFAULT_PROTOCOL = PROPERTIES_DIR / "dataset" / "default-sequential.yaml"


class Config(RecBoleConfig):
    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
        self.cmd_args = list(cmd_args or [])
        for path in config_file_list or []:
            if not os.path.isfile(path):
                raise UserInputError(f"config file '{path}' does not exist")
        try:
            super().__init__(model, dataset, config_file_list, config_dict)
        except UserInputError:
            raise
        except yaml.YAMLError as error:
            raise UserInputError(f"invalid YAML: {' '.join(str(error).split())}") from error
        except (KeyError, NotImplementedError, SyntaxError, TypeError, ValueError) as error:
            # RecBole's own config checks: unknown metric, bad eval_args, ...
            message = error.args[0] if error.args else repr(error)
            raise UserInputError(f"invalid configuration: {message}") from error
        self._check()

    def _load_cmd_line(self):
        """``--key=value`` overrides from ``cmd_args`` (RecBole's own Config reads ``sys.argv``)."""
        overrides = {}
        for arg in self.cmd_args:
            key, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
            if not key or not sep:
                raise UserInputError(f"unrecognised argument '{arg}': settings are given as --key=value")
            if overrides.get(key, value) != value:
                raise UserInputError(f"--{key} is given twice with different values ({overrides[key]}, {value})")
            overrides[key] = value
        return self._convert_config_dict(overrides)

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if model is None:
            raise UserInputError("no model given: pass --model=NAME (e.g. --model=LPO4Rec)")
        if isinstance(model, str):
            model_class = get_model(model)
        else:
            model_class, model = model, model.__name__
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
        if dataset is None:
            raise UserInputError("no dataset given: pass --dataset=NAME (e.g. --dataset=amazon-beauty)")
        return model, model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        self.internal_config_dict["data_path"] = default_data_path(self.external_config_dict.get("data_path"))
        files = [PROPERTIES_DIR / "overall.yaml"]
        backbone = backbone_class(model_class)
        if backbone is not model_class:  # a plugin model: its RecBole backbone's defaults first
            files.insert(0, RECBOLE_PROPERTIES_DIR / "model" / f"{backbone.__name__}.yaml")
        loss = self.external_config_dict.get("preference_loss")
        if getattr(model_class, "preference_loss", None) is None and loss in MODEL_OF_LOSS:
            # a built-in backbone with a preference loss: that loss's defaults
            files.append(PROPERTIES_DIR / "model" / f"{MODEL_OF_LOSS[loss]}.yaml")
        files.append(PROPERTIES_DIR / "model" / f"{model}.yaml")
        own_yaml = PROPERTIES_DIR / "dataset" / f"{dataset}.yaml"
        sequential = model_class.type == ModelType.SEQUENTIAL
        self.default_protocol = sequential and not own_yaml.is_file()  # completed in _set_default_parameters
        if sequential:  # beneath a data set's own YAML, which then needs only what differs
            files.append(DEFAULT_PROTOCOL)
        files.append(own_yaml)
        self.documented_types = {}  # key -> "(type)" of every YAML default in force
        for path in [RECBOLE_PROPERTIES_DIR / "overall.yaml", RECBOLE_PROPERTIES_DIR / "model" / f"{model}.yaml",
                     *files]:
            if path.is_file():
                self.documented_types.update(documented_types(path))
        for path in files:
            if path.is_file():
                loaded = self._update_internal_config_dict(str(path))
                if path.parent.name == "dataset" and loaded:
                    self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]

    def _init_device(self):
        """RecBole's device set-up; under DDP, gloo on CPU instead of a hard-coded nccl."""
        if "local_rank" not in self.final_config_dict:
            return super()._init_device()
        final = self.final_config_dict
        gpu_id = final["gpu_id"]
        final["gpu_id"] = ",".join(map(str, gpu_id)) if isinstance(gpu_id, tuple) else str(gpu_id)
        os.environ["CUDA_VISIBLE_DEVICES"] = final["gpu_id"]
        use_cuda = bool(final["gpu_id"]) and final["use_gpu"] and torch.cuda.is_available()
        backend = final.get("ddp_backend") or ("nccl" if use_cuda else "gloo")
        if use_cuda and len(final["gpu_id"].split(",")) < final["nproc"]:
            raise UserInputError(f"nproc={final['nproc']} processes but only gpu_id={final['gpu_id']!r} GPUs")
        dist.init_process_group(
            backend=backend, rank=final["local_rank"] + final["offset"], world_size=final["world_size"],
            init_method=f"tcp://{final['ip']}:{final['port']}")
        final["device"] = torch.device("cuda", final["local_rank"]) if use_cuda else torch.device("cpu")
        final["single_spec"] = False
        if use_cuda:
            torch.cuda.set_device(final["local_rank"])
        if final["local_rank"] != 0:
            final["state"] = "error"
            final["show_progress"] = False
            final["verbose"] = False

    def _set_default_parameters(self):
        # types first: RecBole's own checks crash on some wrong types (metric.lower())
        check_types(self.final_config_dict, self.documented_types)
        super()._set_default_parameters()
        self.protocol_note = self._complete_default_protocol() if self.default_protocol else None

    def _complete_default_protocol(self):
        """Columns of the default protocol from the .inter header; the note to log, if any key is in force.

        The header must hold USER_ID_FIELD, ITEM_ID_FIELD and a float TIME_FIELD:
        RecBole's sequential data sets order each user's interactions by time.
        """
        final, user = self.final_config_dict, self.external_config_dict
        path = os.path.join(final["data_path"], f"{self.dataset}.inter")
        header = header_types(path, final["field_separator"])
        if header is None:
            return None  # no .inter file (or a malformed header): reported by later checks
        roles = {"USER_ID_FIELD": "token", "ITEM_ID_FIELD": "token", "TIME_FIELD": "float"}
        for key, ftype in roles.items():
            name = final[key]
            if name not in header:
                raise UserInputError(
                    f"{path} has no column '{name}' ({key}); its columns: {', '.join(header)}. "
                    f"Add a '{name}:{ftype}' column or name yours with --{key}=<column>"
                    + (" (sequential models order each user's interactions by time)" if key == "TIME_FIELD" else ""))
            if key == "TIME_FIELD" and not header[name].startswith("float"):
                raise UserInputError(f"{path}: time column '{name}' is typed {header[name]}, expected float")
        if "load_col" not in user:
            final["load_col"] = {"inter": [final[key] for key in roles]}
        with open(DEFAULT_PROTOCOL, encoding="utf-8") as f:
            keys = [*(yaml.safe_load(f) or {}), "load_col"]
        in_force = [key for key in keys if key not in user]
        if not in_force:
            return None
        return (f"using the default sequential protocol for '{self.dataset}' (it has no "
                f"properties/dataset/{self.dataset}.yaml): leave-one-out by '{final['TIME_FIELD']}', full ranking; "
                f"in force from properties/dataset/{DEFAULT_PROTOCOL.name}: {', '.join(in_force)} "
                f"(a config file or --key=value overrides any of them)")

    def _check(self):
        check_config(self)
