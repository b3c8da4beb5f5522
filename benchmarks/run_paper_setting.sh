#!/usr/bin/env bash
# Runs one paper setting end to end on one accelerator: train the original model
# (the published recipe), unlearn with DELETE, evaluate; prints the report table.
#
# Usage:
#   bash benchmarks/run_paper_setting.sh CONFIG WORKDIR [--config.FIELD=VALUE ...]
#
#   CONFIG   one of: cifar10_resnet18 cifar10_vgg16 cifar10_vit_s16 cifar10_swin_t
#            cifar100_resnet18 cifar100_resnet18_cifar tinyimagenet_resnet18
#            vggface2_resnet18 (runs vggface2_pretrain_resnet18 first)
#            vggface2_pretrain_resnet18
#   WORKDIR  output folder (checkpoints, report.md, report.json, plots/, metrics/);
#            rerunning the same command resumes where it stopped.
#   Extra arguments go to every delete_jax.main call, e.g. --config.num_forget=3,
#   --config.run_retrain=True (adds the Retrain reference; a second full training).
#
# Environment:
#   DATA_DIR   TFDS data dir (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets).
#   PYTHON     interpreter (default: python).
#
# Data: the datasets must be in DATA_DIR already or reachable:
#   * cifar10 / cifar100: prepared by TFDS without TensorFlow on first use; needs
#     internet once, or cifar-10-binary.tar.gz / cifar-100-binary.tar.gz in
#     DATA_DIR/downloads/manual/<name>/.
#   * tinyimagenet: tiny-imagenet-200.zip (or its folder) in
#     DATA_DIR/downloads/manual/tinyimagenet/; fetched here with curl when missing
#     and the network is up.
#   * vggface2: the VGGFace2 training identity folders in
#     DATA_DIR/downloads/manual/vggface2/ (distributed on request only; never
#     downloaded).
# The first load decodes the data once into DATA_DIR/delete_jax_arrays/.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
config=$1
workdir=$2
shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
python=${PYTHON:-python}
data_dir=${DATA_DIR:-${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}}

case "$config" in
  cifar10_resnet18|cifar10_vgg16|cifar10_vit_s16|cifar10_swin_t|cifar100_resnet18|\
  cifar100_resnet18_cifar|tinyimagenet_resnet18|vggface2_resnet18|\
  vggface2_pretrain_resnet18) ;;
  *) echo "error: unknown setting '$config'; see: bash $0" >&2; exit 2 ;;
esac

if [[ $config == tinyimagenet_* ]]; then
  manual=$data_dir/downloads/manual/tinyimagenet
  if [[ ! -e $manual/tiny-imagenet-200.zip && ! -d $manual/tiny-imagenet-200 &&
        ! -f $manual/val/val_annotations.txt &&
        ! -f $data_dir/delete_jax_arrays/tinyimagenet-1.0.0.npz &&
        ! -d $data_dir/tinyimagenet ]]; then
    mkdir -p "$manual"
    echo "fetching tiny-imagenet-200.zip into $manual"
    curl -fL --retry 3 -o "$manual/tiny-imagenet-200.zip.part" \
        http://cs231n.stanford.edu/tiny-imagenet-200.zip
    mv "$manual/tiny-imagenet-200.zip.part" "$manual/tiny-imagenet-200.zip"
  fi
fi

mkdir -p "$workdir"
log=$workdir/run_paper_setting.log
echo "setting $config, workdir $workdir, data dir $data_dir" | tee -a "$log"
"$python" -c 'import jax; print("devices:", jax.devices())' | tee -a "$log"

run() {  # run CONFIG WORKDIR [flags...]
  local start=$SECONDS
  "$python" -m delete_jax.main --config "configs/$1.py" --workdir "$2" \
      --config.data_dir="$data_dir" "${@:3}" 2>&1 | tee -a "$log"
  echo "$1 finished in $(( SECONDS - start )) s" | tee -a "$log"
}

if [[ $config == vggface2_resnet18 ]]; then
  # The published face pipeline: pretrain on identities 0-99, then fine-tune the
  # pretrained network (new 10-way output layer) on identities 100-109, unlearn.
  run vggface2_pretrain_resnet18 "$workdir/pretrain" "$@"
  run vggface2_resnet18 "$workdir" --config.train.init_from="$workdir/pretrain" "$@"
else
  run "$config" "$workdir" "$@"
fi
echo "report: $workdir/report.md" | tee -a "$log"
