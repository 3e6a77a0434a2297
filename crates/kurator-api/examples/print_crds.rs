fn main() {
    print!("{}", kurator_api::crds::all_yaml());
}
